"""Fine-tuning: assistant-only labels, token masks, length-grouped batches, the training
loop (full and LoRA) on a tiny Llama built here, resume after an interruption, cached
runs, and errors. One slow test trains the packaged SmolLM2 on real GSM8K rows."""

import copy
from pathlib import Path
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from conftest import corpora_path, rows, single, write_jsonl
from curate.errors import CurateError
from curate.finetune import TrainConfig, batches, encode, finetune, load_run_model
from curate.tokens import IGNORE
from curate.finetune.train import batch_loss
from curate.ingest import ingest
from curate.scoring.lm import LMScorer
from curate.selectors import select
from curate.selection import Selection, save_selection
from curate.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")

EOT = "<|im_end|>"
MULTI_TURN = [
    {"role": "system", "content": "You add numbers."},
    {"role": "user", "content": "What is 2 plus 3?"},
    {"role": "assistant", "content": "2 plus 3 is 5."},
    {"role": "user", "content": "And 4 plus 4?"},
    {"role": "assistant", "content": "4 plus 4 is 8, an even number."},
]


@pytest.fixture(scope="module")
def train_store(tmp_path_factory):
    """40 alpaca rows of sums, and a random selection `sel` of 20 of them."""
    root = tmp_path_factory.mktemp("finetune")
    recs = [{"instruction": f"Add {a} and {b}.", "output": f"The sum of {a} and {b} is {a + b}."}
            for a, b in zip(range(3, 83, 2), range(40, 0, -1))]
    store = Store(root / "store")
    ingest(store, [write_jsonl(root / "sums.jsonl", recs)])
    select(store, "random", "sel", budget=20)
    return store


def tiny_config(tiny, **overrides) -> TrainConfig:
    options = {"model": str(tiny), "method": "full", "lr": 1e-2, "max_steps": 30,
               "batch_tokens": 512, "warmup_ratio": 0.0, "max_tokens": 256}
    return TrainConfig(**{**options, **overrides})


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode(example.input_ids[example.labels != IGNORE])


# ---------------------------------------------------------------- labels and masks
def test_only_assistant_content_and_end_of_turn_are_trained(tokenizer):
    (one, multi) = encode(tokenizer, [single("Hi there?", "Hello! 12 + 30 = 42."), MULTI_TURN],
                          max_tokens=1024)
    assert trained_text(tokenizer, one) == f"Hello! 12 + 30 = 42.{EOT}"
    trained = one.labels != IGNORE
    assert (one.labels[trained] == one.input_ids[trained]).all()
    # every assistant turn is trained, nothing of the system or user turns
    assert trained_text(tokenizer, multi) == \
        f"2 plus 3 is 5.{EOT}4 plus 4 is 8, an even number.{EOT}"
    # the sequence ends at the last trained token: nothing after it carries a loss
    assert tokenizer.decode(multi.input_ids[-1:]) == EOT and not multi.truncated


def test_untrainable_examples_are_skipped(tokenizer):
    out = encode(tokenizer, [[{"role": "user", "content": "no answer"}],
                             single("q", "a"), single("q", "")], max_tokens=1024)
    assert [e.index for e in out] == [1]


def test_templates_that_rewrite_earlier_turns_fail_clearly(tokenizer):
    rewriting = copy.copy(tokenizer)  # past turns collapse to their role: spans cannot match
    rewriting.chat_template = ("{% for m in messages %}{% if loop.last %}{{ m.content }}"
                               "{% else %}[{{ m.role }}]{% endif %}{% endfor %}")
    with pytest.raises(CurateError, match="renders assistant turn 2 differently"):
        encode(rewriting, [MULTI_TURN], max_tokens=1024)
    rewriting.chat_template = None
    with pytest.raises(CurateError, match="example 0: the tokenizer's chat template cannot"):
        encode(rewriting, [MULTI_TURN], max_tokens=1024)


def test_token_mask_zeroes_exactly_the_masked_positions(tokenizer):
    (full,) = encode(tokenizer, [MULTI_TURN], max_tokens=1024)
    last = np.flatnonzero(full.labels != IGNORE)[-len(tokenizer("4 plus 4 is 8, an even number.")
                                                      ["input_ids"]) - 1:]
    mask = np.ones(len(last), np.int8)
    mask[[0, 3, 4]] = 0
    (masked,) = encode(tokenizer, [MULTI_TURN], max_tokens=1024, token_masks={0: mask})
    assert (masked.input_ids == full.input_ids).all()
    changed = np.flatnonzero(masked.labels != full.labels)
    assert changed.tolist() == last[[0, 3, 4]].tolist()
    assert (masked.labels[changed] == IGNORE).all()
    # the first assistant turn is never masked
    assert trained_text(tokenizer, masked).startswith(f"2 plus 3 is 5.{EOT}")
    with pytest.raises(CurateError, match="has 5 entries, but its last assistant turn has"):
        encode(tokenizer, [MULTI_TURN], max_tokens=1024, token_masks={0: np.ones(5)})


def test_mask_length_is_the_lm_scorers_response_token_count(tokenizer, tiny):
    """The contract token cleaning relies on: one mask entry per `token_losses` entry."""
    conversations = [single("Add 3 and 4.", "The sum of 3 and 4 is 7."), MULTI_TURN,
                     single("List two colours.", "- red\n- blue\n\n  (and more)")]
    scorer = LMScorer.with_model(AutoModelForCausalLM.from_pretrained(str(tiny)), tokenizer)
    scores = scorer.score(pa.table({"messages": conversations}))
    counts = scores["response_tokens"].to_pylist()
    assert [len(x) for x in scores["token_losses"].to_pylist()] == counts
    for k, (messages, n) in enumerate(zip(conversations, counts)):
        encode(tokenizer, [messages], 1024, token_masks={0: np.ones(n)})  # fits
        with pytest.raises(CurateError, match="token mask"):
            encode(tokenizer, [messages], 1024, token_masks={0: np.ones(n + 1)})


def test_truncation_keeps_the_end(tokenizer):
    (whole,) = encode(tokenizer, [MULTI_TURN], max_tokens=1024)
    (cut,) = encode(tokenizer, [MULTI_TURN], max_tokens=20)
    assert len(cut.input_ids) == 20 and cut.truncated
    assert (cut.input_ids == whole.input_ids[-20:]).all()
    assert trained_text(tokenizer, cut) == f"4 plus 4 is 8, an even number.{EOT}"
    # a last turn longer than the limit keeps one token of context and its own head
    (head,) = encode(tokenizer, [MULTI_TURN], max_tokens=6)
    assert len(head.input_ids) == 6 and head.truncated
    assert "4 plus 4 is 8, an even number.".startswith(trained_text(tokenizer, head))
    assert head.labels[0] == IGNORE and (head.labels[1:] != IGNORE).all()


def test_batches_are_length_grouped_deterministic_and_bounded(tokenizer):
    convs = [single(f"Q{i}", "word " * (i % 13 + 1)) for i in range(50)]
    examples = encode(tokenizer, convs, max_tokens=1024)
    got = batches(examples, batch_tokens=200, seed=3)
    assert sorted(i for b in got for i in b) == list(range(50))
    for b in got:
        widths = [len(examples[i].input_ids) for i in b]
        assert len(b) == 1 or len(b) * max(widths) <= 200
    assert got == batches(examples, batch_tokens=200, seed=3)
    assert got != batches(examples, batch_tokens=200, seed=4)
    assert sorted(map(sorted, got)) == sorted(map(sorted, batches(examples, 200, seed=4)))


def test_masked_tokens_do_not_change_the_loss(tokenizer, tiny):
    model = AutoModelForCausalLM.from_pretrained(str(tiny)).eval()
    answers = "The sum is 11, done.", "The sum is 97, ok."
    a, b = (single("Add 5 and 6.", x) for x in answers)
    ta, tb = (tokenizer(x)["input_ids"] + [tokenizer.convert_tokens_to_ids(EOT)] for x in answers)
    assert len(ta) == len(tb)
    first_diff = next(i for i, (x, y) in enumerate(zip(ta, tb)) if x != y)
    tail = np.ones(len(ta), np.int8)
    tail[first_diff:] = 0  # the differing answer and the end-of-turn token
    with torch.no_grad():
        plain = encode(tokenizer, [a, b], 256)
        assert batch_loss(model, plain[:1])[0] != batch_loss(model, plain[1:])[0]
        masked = encode(tokenizer, [a, b], 256, token_masks={0: tail, 1: tail})
        (loss_a, n_a), (loss_b, n_b) = batch_loss(model, masked[:1]), batch_loss(model, masked[1:])
        assert (loss_a.item(), n_a) == (loss_b.item(), n_b) and n_a == first_diff
        # the batch loss is the sum over trained tokens of every row (padding ignored)
        mixed = encode(tokenizer, [MULTI_TURN, a], 256, token_masks={1: tail})
        loss, count = batch_loss(model, mixed)
        parts = [batch_loss(model, [e]) for e in mixed]
        assert count == sum(c for _, c in parts)
        assert loss.item() == pytest.approx(sum(p.item() for p, _ in parts), rel=1e-5)
        # against a plain forward pass: mean cross-entropy of the unmasked positions
        e = masked[0]
        logits = model(torch.from_numpy(e.input_ids)[None]).logits[0, :-1]
        ref = torch.nn.functional.cross_entropy(logits, torch.from_numpy(e.labels[1:]),
                                                ignore_index=IGNORE)
        assert (loss_a / n_a).item() == pytest.approx(ref.item(), rel=1e-5)


# ---------------------------------------------------------------- training runs
def test_full_finetune_lowers_the_loss_and_writes_the_run(train_store, tiny):
    report = finetune(train_store, "sel", tiny_config(tiny))
    assert report.steps == 30 and len(report.losses) == 30 and not report.cached
    assert report.examples == 20 and report.skipped == 0
    assert np.mean(report.losses[-3:]) < 0.5 * np.mean(report.losses[:3])
    run = report.path
    assert report.run_id.startswith("sel-full-s0-")
    assert run == train_store.root / "runs" / report.run_id
    assert (run / "model" / "config.json").is_file() and not (run / "checkpoint").exists()
    loss = pq.read_table(run / "loss.parquet").to_pylist()
    assert [r["step"] for r in loss] == list(range(1, 31))
    assert all(r["tokens"] > 0 for r in loss)
    # no warmup, then linear decay that still trains on the last step
    assert loss[0]["lr"] == pytest.approx(1e-2) and loss[-1]["lr"] == pytest.approx(1e-2 / 30)
    config = json.loads((run / "config.json").read_text())
    assert config["selection_fingerprint"] and config["config"]["lr"] == 1e-2
    assert rows(train_store, f"SELECT status, steps, method FROM runs "
                             f"WHERE run_id = '{report.run_id}'") == [("done", 30, "full")]
    model, _ = load_run_model(train_store, report.run_id)
    assert not model.training

    again = finetune(train_store, "sel", tiny_config(tiny))  # same command: the finished run
    assert again.cached and again.run_id == report.run_id and again.losses == report.losses


def test_lora_trains_an_adapter(train_store, tiny):
    report = finetune(train_store, "sel", tiny_config(tiny, method="lora", lr=1e-2, lora_r=8))
    adapter = report.path / "adapter"
    targets = json.loads((adapter / "adapter_config.json").read_text())["target_modules"]
    assert set(targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj"}
    assert np.mean(report.losses[-3:]) < np.mean(report.losses[:3]) - 1.0
    merged, _ = load_run_model(train_store, report.run_id)
    original = AutoModelForCausalLM.from_pretrained(str(tiny))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[name], original.state_dict()[name])
    assert type(merged).__name__ == "LlamaForCausalLM"  # merged: no peft wrapper left


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("method", ["full", "lora"])
def test_resume_after_interruption_equals_an_uninterrupted_run(train_store, tiny, method):
    config = tiny_config(tiny, method=method, max_steps=8, checkpoint_every=3, batch_tokens=256,
                         grad_accum=2, warmup_ratio=0.25, weight_decay=0.1)
    straight = finetune(train_store, "sel", config, run_id=f"straight-{method}")

    def stop_at_5(row):
        if row["step"] == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        finetune(train_store, "sel", config, run_id=f"resumed-{method}", on_step=stop_at_5)
    partial = train_store.root / "runs" / f"resumed-{method}"
    assert (partial / "checkpoint").is_dir() and not (partial / "run.parquet").exists()
    assert pq.read_table(partial / "loss.parquet").num_rows == 3

    seen = []
    resumed = finetune(train_store, "sel", config, run_id=f"resumed-{method}",
                       on_step=lambda row: seen.append(row["step"]))
    assert resumed.resumed_from == 3 and seen == [4, 5, 6, 7, 8]
    np.testing.assert_allclose(resumed.losses, straight.losses, rtol=0, atol=1e-5)
    lrs = [pq.read_table(r.path / "loss.parquet")["lr"].to_pylist() for r in (straight, resumed)]
    np.testing.assert_allclose(lrs[0], lrs[1], rtol=1e-12)
    weights = "model/model.safetensors" if method == "full" else "adapter/adapter_model.safetensors"
    a, b = load_file(straight.path / weights), load_file(resumed.path / weights)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5)


def test_token_masks_reach_training_and_bind_the_run_id(train_store, tiny, tokenizer):
    plain = finetune(train_store, "sel", tiny_config(tiny, max_steps=2), run_id="bound")
    with pytest.raises(CurateError, match="exists with another configuration"):
        finetune(train_store, "sel", tiny_config(tiny, max_steps=3), run_id="bound")
    (first, response), = rows(train_store, "SELECT id, response FROM pairs JOIN "
                                           "selection_members USING (id) WHERE selection = 'sel' "
                                           "ORDER BY rank LIMIT 1")
    n = len(tokenizer(response)["input_ids"]) + 1
    masks = {first: np.zeros(n), "not-in-the-selection": np.ones(1)}
    with pytest.raises(CurateError, match="exists with another configuration"):
        finetune(train_store, "sel", tiny_config(tiny, max_steps=2), run_id="bound",
                 token_masks=masks)
    masked = finetune(train_store, "sel", tiny_config(tiny, max_steps=2), token_masks=masks)
    assert (masked.examples, masked.skipped) == (19, 1)  # everything of one example masked
    assert masked.tokens == plain.tokens - n and masked.run_id != plain.run_id
    assert finetune(train_store, "sel", tiny_config(tiny, max_steps=2), run_id="bound").cached


def test_errors_before_any_training(train_store, tiny, tmp_path):
    with pytest.raises(CurateError, match=r"(?s)no selection named 'nope'.*use one of: sel"):
        finetune(train_store, "nope", tiny_config(tiny))
    save_selection(train_store, Selection(name="empty", method="random", params={}, budget="0",
                                          ids=[], gains=np.zeros(0), reasons=[], pool_size=40,
                                          fingerprint="x"), overwrite=True)
    with pytest.raises(CurateError, match="selection 'empty' has no examples"):
        finetune(train_store, "empty", tiny_config(tiny))
    with pytest.raises(CurateError, match="unknown model"):
        finetune(train_store, "sel", tiny_config(tmp_path / "missing"))
    with pytest.raises(CurateError, match="not a Hugging Face model"):
        finetune(train_store, "sel", tiny_config(tmp_path))
    with pytest.raises(CurateError, match="method 'qlora'"):
        finetune(train_store, "sel", tiny_config(tiny, method="qlora"))
    with pytest.raises(CurateError, match="no finished run 'nope'"):
        load_run_model(train_store, "nope")
    assert not list((train_store.root / "runs").glob("*qlora*"))  # failed before any work


@pytest.mark.slow
@pytest.mark.corpora
def test_lora_on_the_packaged_smollm2(tmp_path):
    with corpora_path("gsm8k", "train.jsonl").open() as f:
        recs = [json.loads(next(f)) for _ in range(4)]
    store = Store(tmp_path / "store")
    ingest(store, [write_jsonl(tmp_path / "gsm8k.jsonl", recs)])
    select(store, "random", "four", budget=4)
    report = finetune(store, "four", TrainConfig(max_steps=2, batch_tokens=1024))
    assert report.steps == 2 and report.examples == 4 and np.isfinite(report.losses).all()
    assert (report.path / "adapter" / "adapter_model.safetensors").is_file()
    model, tokenizer = load_run_model(store, report.run_id)
    assert not model.training and tokenizer.pad_token is not None


def test_evaluate_runs_compare_and_contamination(train_store, tiny, tmp_path):
    import json as _json
    import warnings

    from curate.finetune.compare import compare
    from curate.finetune.evaluate import evaluate

    held_out = write_jsonl(tmp_path / "held_out.jsonl", [
        {"instruction": f"Add {a} and {b}.", "output": f"The sum of {a} and {b} is {a + b}."}
        for a, b in zip(range(100, 116, 2), range(7, 15))])
    select(train_store, "random", "rand-a", budget=10, seed=1)
    select(train_store, "longest", "long-a", budget=10)
    config = tiny_config(tiny, max_steps=6)
    board = compare(train_store, str(held_out), ["rand-a", "long-a"], seeds=2, config=config,
                    baseline="rand-a")
    arms = {a["selection"]: a for a in board["arms"]}
    assert set(arms) == {"rand-a", "long-a"} and board["baseline"] == "rand-a"
    assert all(len(a["runs"]) == 2 for a in arms.values())
    assert arms["long-a"]["delta_vs_baseline"] == pytest.approx(
        arms["long-a"]["nll_mean"] - arms["rand-a"]["nll_mean"])
    assert arms["long-a"]["p_value"] is not None and arms["rand-a"]["delta_vs_baseline"] is None
    # every trained arm beats the untouched (random-init) base model on the held-out target
    assert max(a["nll_mean"] for a in arms.values()) < board["base"]["nll"]
    saved = _json.loads((Path(board["path"]) / "leaderboard.json").read_text())
    assert saved["arms"][0]["selection"] == board["arms"][0]["selection"]
    assert (Path(board["path"]) / "leaderboard.png").stat().st_size > 1000
    # a rerun is cached: the same runs and evaluations, nothing retrained
    again = compare(train_store, str(held_out), ["rand-a", "long-a"], seeds=2, config=config,
                    baseline="rand-a")
    assert [r["eval_id"] for a in again["arms"] for r in a["runs"]] == \
        [r["eval_id"] for a in board["arms"] for r in a["runs"]]
    # evaluating a run on its own training selection is flagged as contaminated
    run_id = arms["rand-a"]["runs"][0]["run_id"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluate(train_store, "rand-a", run_id=run_id)
    assert report.overlap == 10 and any("contaminated" in str(w.message) for w in caught)
    with pytest.raises(CurateError, match="no finished run"):
        evaluate(train_store, str(held_out), run_id="nope")
    with pytest.raises(CurateError, match="no selection 'missing'"):
        compare(train_store, str(held_out), ["rand-a", "missing"], config=config)
