"""Selection masks: saved with the selection, shown in SQL, honoured by fine-tuning
(turn and token masks) and written by export in axolotl's per-message fields."""

import json

import numpy as np
import pytest
import torch

from conftest import rows, write_jsonl
from curate.errors import CurateError
from curate.export import export
from curate.finetune import encode, finetune
from curate.tokens import IGNORE
from curate.finetune.train import batch_loss
from curate.ingest import ingest
from curate.selection import (Selection, load_masks, make_masks, merge_masks,
                              save_selection)
from curate.store import Store
from test_finetune import EOT, MULTI_TURN, single, tiny_config, trained_text

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_turn_store(tmp_path_factory):
    """12 two-turn conversations (sums), all members of selection `all`."""
    root = tmp_path_factory.mktemp("masks")
    recs = [{"messages": [
        {"role": "user", "content": f"Add {a} and {b}."},
        {"role": "assistant", "content": f"Let me think: {a} plus {b}."},
        {"role": "user", "content": "So?"},
        {"role": "assistant", "content": f"The sum of {a} and {b} is {a + b}."}]}
        for a, b in zip(range(3, 27, 2), range(12, 0, -1))]
    store = Store(root / "store")
    ingest(store, [write_jsonl(root / "chats.jsonl", recs)])
    ids = [r[0] for r in rows(store, "SELECT id FROM examples ORDER BY id")]
    save(store, "all", ids)
    return store


def save(store, name, ids, masks=None, params=None):
    sel = Selection(name=name, method="manual", params=params or {}, budget="all", ids=ids,
                    gains=np.zeros(len(ids)), reasons=[""] * len(ids), pool_size=len(ids),
                    fingerprint="x", masks=masks)
    save_selection(store, sel, overwrite=True)
    return sel


def last_turn_tokens(tokenizer, messages) -> int:
    (e,) = encode(tokenizer, [messages[:2]], 1024)
    return e.trained_tokens


def test_saved_masks_appear_in_sql_and_the_manifest(two_turn_store):
    ids = [r[0] for r in rows(two_turn_store, "SELECT id FROM examples ORDER BY id")]
    masks = make_masks(ids[:3], turns=[[False, True], None, [True, True]],
                       tokens=[None, [1, 0, 1], None], reasons=["first turn wrong", "noisy", None])
    save(two_turn_store, "masked", ids, masks)
    got = rows(two_turn_store, "SELECT id, turns, tokens, reason FROM selection_masks "
                               "WHERE selection = 'masked' ORDER BY id")
    assert got == [(ids[0], [False, True], None, "first turn wrong"),
                   (ids[1], None, [1, 0, 1], "noisy"), (ids[2], [True, True], None, None)]
    assert rows(two_turn_store, "SELECT masked FROM selections WHERE name = 'masked'") == [(3,)]
    assert load_masks(two_turn_store, "masked").num_rows == 3
    assert load_masks(two_turn_store, "all") is None
    # rows without any mask are not stored; masks of non-members are refused
    save(two_turn_store, "sparse", ids, make_masks(ids[:2], turns=[None, [True, False]]))
    assert rows(two_turn_store, "SELECT count(*) FROM selection_masks "
                                "WHERE selection = 'sparse'") == [(1,)]
    with pytest.raises(CurateError, match="not members"):
        save(two_turn_store, "bad", ids[:2], make_masks([ids[5]], turns=[[True, False]]))
    with pytest.raises(CurateError, match="other than 0 and 1"):
        save(two_turn_store, "bad", ids, make_masks([ids[0]], tokens=[[1, 2]]))
    assert not (two_turn_store.root / "selections" / "bad").exists()


def test_merge_masks_ands_fields_set_by_both_steps():
    a = make_masks(["x", "y"], turns=[[True, False], None], tokens=[None, [1, 1, 0]],
                   reasons=["trace", None])
    b = make_masks(["x", "y"], turns=[[False, True], None], tokens=[[1, 0], [0, 1, 1]],
                   reasons=["clean", "clean"])
    merged = {r["id"]: r for r in merge_masks(a, b).to_pylist()}
    assert merged["x"] == {"id": "x", "turns": [False, False], "tokens": [1, 0],
                           "reason": "trace; clean"}
    assert merged["y"]["tokens"] == [0, 1, 0] and merged["y"]["turns"] is None
    with pytest.raises(CurateError, match="different lengths"):
        merge_masks(a, make_masks(["y"], tokens=[[1]]))


def test_turn_masks_in_encode(tokenizer):
    plain, first, second = encode(tokenizer, [MULTI_TURN] * 3, 1024,
                                  turn_masks={1: [True, False], 2: [False, True]})
    assert trained_text(tokenizer, first) == f"2 plus 3 is 5.{EOT}"
    assert trained_text(tokenizer, second) == f"4 plus 4 is 8, an even number.{EOT}"
    assert first.trained_tokens + second.trained_tokens == plain.trained_tokens
    assert not encode(tokenizer, [MULTI_TURN], 1024, turn_masks={0: [False, False]})
    with pytest.raises(CurateError, match="turn mask of example 0 has 1 entries"):
        encode(tokenizer, [MULTI_TURN], 1024, turn_masks={0: [True]})
    # a masked turn's own tokens carry no loss: changing its text changes nothing trained
    other = [dict(m) for m in MULTI_TURN]
    other[4]["content"] = "Eight."
    a, b = encode(tokenizer, [MULTI_TURN, other], 1024, turn_masks={0: [True, False],
                                                                    1: [True, False]})
    assert (a.input_ids == b.input_ids).all() and (a.labels == b.labels).all()


def test_finetune_applies_saved_masks(two_turn_store, tiny, tokenizer):
    ids, messages = zip(*rows(two_turn_store, "SELECT id, messages FROM examples ORDER BY id"))
    config = tiny_config(tiny, max_steps=2)
    plain = finetune(two_turn_store, "all", config)
    first_turn = last_turn_tokens(tokenizer, messages[0])
    (whole,) = encode(tokenizer, [messages[1]], 1024)
    n_last = whole.trained_tokens - last_turn_tokens(tokenizer, messages[1])
    token_mask = np.ones(n_last, np.uint8)
    token_mask[:4] = 0
    save(two_turn_store, "all-masked", list(ids), make_masks(
        list(ids[:2]), turns=[[False, True], None], tokens=[None, token_mask]),
        params={"mask_model": str(tiny)})
    masked = finetune(two_turn_store, "all-masked", config)
    assert masked.tokens == plain.tokens - first_turn - 4
    # the masks are part of the run's identity: other masks, another run
    save(two_turn_store, "all-masked", list(ids), make_masks([ids[0]], turns=[[False, True]]),
         params={"mask_model": str(tiny)})
    other = finetune(two_turn_store, "all-masked", config)
    assert other.run_id != masked.run_id and other.tokens == plain.tokens - first_turn
    saved = json.loads((masked.path / "config.json").read_text())
    assert (saved["token_masked"], saved["turn_masked"]) == (1, 1)


def test_masked_tokens_do_not_change_the_finetune_loss(tokenizer, tiny):
    """Two answers that differ only in masked tokens give the same loss and gradient."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny))
    a, b = single("Add 5 and 6.", "It is 11 because five and six."), \
        single("Add 5 and 6.", "It is 11 since 5 plus 6 ok")
    n = len(tokenizer("It is 11")["input_ids"])
    masks = {}
    for k, conv in enumerate((a, b)):
        (e,) = encode(tokenizer, [conv], 256)
        mask = np.zeros(e.trained_tokens, np.uint8)
        mask[:n] = 1
        masks[k] = mask
    ea, eb = encode(tokenizer, [a, b], 256, token_masks=masks)
    grads = []
    for e in (ea, eb):
        model.zero_grad()
        loss, count = batch_loss(model, [e])
        loss.backward()
        grads.append((loss.item(), count, model.model.embed_tokens.weight.grad.clone()))
    assert grads[0][:2] == grads[1][:2] and grads[0][1] == n
    torch.testing.assert_close(grads[0][2], grads[1][2])
    assert (ea.labels[ea.labels != IGNORE] == eb.labels[eb.labels != IGNORE]).all()


def test_export_messages_writes_axolotl_fields(two_turn_store, tiny, tokenizer, tmp_path):
    ids, messages = zip(*rows(two_turn_store, "SELECT id, messages FROM examples ORDER BY id"))
    (whole,) = encode(tokenizer, [messages[1]], 1024)
    n_last = whole.trained_tokens - last_turn_tokens(tokenizer, messages[1])
    mask = np.zeros(n_last, np.uint8)
    mask[:3] = 1
    save(two_turn_store, "to-export", list(ids[:3]), make_masks(
        list(ids[:2]), turns=[[False, True], None], tokens=[None, mask]),
        params={"mask_model": str(tiny)})
    out = tmp_path / "masked.jsonl"
    assert export(two_turn_store, out, "messages", selection="to-export").rows == 3
    lines = {json.dumps(m["messages"][0]): m["messages"]
             for m in map(json.loads, out.read_text().splitlines())}
    by_id = {i: lines[json.dumps(m[0])] for i, m in zip(ids[:3], messages[:3])}
    first, second, third = (by_id[i] for i in ids[:3])
    assert [m.get("training") for m in first] == [None, False, None, True]
    assert "train_detail" not in json.dumps(first) and third == list(messages[2])
    detail = second[3]["train_detail"]
    content = second[3]["content"]
    head = tokenizer.decode(tokenizer(content, add_special_tokens=False)["input_ids"][:3])
    assert detail == [{"begin_offset": 0, "end_offset": len(head) - 1, "train": True},
                      {"begin_offset": len(head), "end_offset": len(content) - 1,
                       "train": False}]
    assert all("training" not in m for m in second)
    # jsonl and parquet carry the canonical example only: masks live in selection_masks
    export(two_turn_store, tmp_path / "plain.jsonl", "jsonl", selection="to-export")
    assert "train_detail" not in (tmp_path / "plain.jsonl").read_text()
    save(two_turn_store, "no-model", list(ids[:3]), make_masks([ids[1]], tokens=[mask]))
    with pytest.raises(CurateError, match="names no mask_model"):
        export(two_turn_store, tmp_path / "x.jsonl", "messages", selection="no-model")
