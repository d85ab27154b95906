"""Gradient influence: batched per-example LoRA gradients equal a loop of single backward
passes, the SRHT projection preserves inner products, warm-up snapshots, features stored
once and reused across targets and reruns, scores in `scores_influence` usable by the
selectors, and clear errors; per-step gradients and `scores_step_influence` feeding the
expert-failures selector. One slow test ranks real GSM8K rows above Code Alpaca / T0
for a GSM8K test target with the packaged SmolLM2."""

import json

import pyarrow.parquet as pq
import pytest
import torch
from transformers import LlamaForCausalLM

from conftest import corpora_path, rows, single, write_jsonl
from curate.errors import CurateError
from curate.finetune import TrainConfig, encode, finetune, prepare_scorer
from curate.finetune.train import LORA_TARGETS, batch_loss
from curate.models import quiet_peft
from curate.ingest import ingest
from curate.scoring import make_scorer, run_scorer
from curate.scoring.influence import (InfluenceScorer, Projector, hadamard,
                                      per_example_gradients, per_step_gradients,
                                      trainable_linears)
from curate.scoring.steps import step_runs
from curate.selectors import select
from curate.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """24 sums and 12 colour questions, and a held-out file of 4 sums (the target)."""
    root = tmp_path_factory.mktemp("influence")
    sums = [{"instruction": f"Add {a} and {b}.", "output": f"The sum of {a} and {b} is {a + b}."}
            for a, b in zip(range(3, 51, 2), range(30, 6, -1))]
    colours = [{"instruction": f"Name a colour of thing {k}.", "output": c}
               for k, c in enumerate(["red", "green", "blue", "amber", "teal", "violet"] * 2)]
    store = Store(root / "store")
    ingest(store, [write_jsonl(root / "sums.jsonl", sums),
                   write_jsonl(root / "colours.jsonl", colours)])
    target = write_jsonl(root / "held_out.jsonl", [
        {"instruction": f"Add {a} and {b}.", "output": f"The sum of {a} and {b} is {a + b}."}
        for a, b in [(100, 7), (120, 9), (140, 11), (160, 13)]])
    return store, target


def run_influence(store, scorer):
    """As `curate score influence` does: the warm-up first, then the scoring."""
    prepare_scorer(store, scorer)
    return run_scorer(store, scorer)


def tiny_scorer(store, tiny, target, **overrides) -> InfluenceScorer:
    options = {"store": store, "target": str(target), "model": str(tiny), "warmup": 16,
               "checkpoints": 2, "dim": 512, "max_tokens": 64, "lora_r": 4, "warmup_epochs": 2}
    return InfluenceScorer(**{**options, **overrides})


# ---------------------------------------------------------------- gradients and projection
def lora_model(tiny):
    """The tiny Llama with a rank-4 adapter whose B matrices are random (peft starts them
    at zero, which makes every A gradient zero)."""
    from peft import LoraConfig, get_peft_model

    with quiet_peft():
        model = get_peft_model(LlamaForCausalLM.from_pretrained(str(tiny)), LoraConfig(
            task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=list(LORA_TARGETS)))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def alone(model, example):
    """The LoRA gradient of one example's mean trained-token loss, by the trainer's own
    loss and one backward pass."""
    params = [p for _, m in trainable_linears(model) for p in m.parameters() if p.requires_grad]
    model.zero_grad()
    loss, count = batch_loss(model, [example])
    (loss / count).backward()
    return torch.cat([p.grad.reshape(-1) for p in params]), loss.item() / count


def test_batched_per_example_gradients_equal_a_loop_of_backward_passes(tiny, tokenizer):
    model = lora_model(tiny)
    examples = encode(tokenizer, [single(f"Add {a} and {b}.", "The sum is " + "ok " * a)
                                  for a, b in [(1, 2), (9, 4), (4, 40)]], 256)
    assert len({len(e.input_ids) for e in examples}) == 3  # padding is exercised
    batched, losses = per_example_gradients(model, examples)
    assert batched.shape == (3, sum(p.numel() for _, m in trainable_linears(model)
                                    for p in m.parameters() if p.requires_grad))
    for b, example in enumerate(examples):
        grad, loss = alone(model, example)
        torch.testing.assert_close(batched[b], grad, rtol=1e-4, atol=1e-6)
        assert losses[b] == pytest.approx(loss, rel=1e-5)


def test_per_step_gradients_equal_a_backward_pass_per_step(tiny, tokenizer):
    import dataclasses

    import numpy as np

    from curate.tokens import IGNORE

    model = lora_model(tiny)
    conversations = [
        [{"role": "user", "content": "Find the capital of France."},
         {"role": "assistant", "content": "Action: search[France]"},
         {"role": "user", "content": "Observation: France, capital Paris."},
         {"role": "assistant", "content": "Action: finish[Paris]"}],
        [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi there!"}],
        [{"role": "user", "content": "Count."}, {"role": "assistant", "content": "one two"},
         {"role": "user", "content": "More."}, {"role": "assistant", "content": ""},
         {"role": "user", "content": "Go on."}, {"role": "assistant", "content": "three " * 7}],
    ]
    examples = encode(tokenizer, conversations, 256)
    runs = [step_runs(conversations[e.index], e, str(e.index)) for e in examples]
    assert [sorted(r) for r in runs] == [[0, 1], [0], [0, 2]]  # the empty turn: no step
    whole, _ = per_example_gradients(model, examples)
    got = dict(per_step_gradients(model, examples, runs))
    assert sorted(got) == [0, 1, 2]
    assert not any(m._forward_hooks for _, m in trainable_linears(model))  # all removed
    for b, example in enumerate(examples):
        trained = np.flatnonzero(example.labels != IGNORE)
        mixed = torch.zeros_like(whole[b])
        for s, tokens in runs[b].items():
            labels = np.full_like(example.labels, IGNORE)
            labels[trained[tokens]] = example.labels[trained[tokens]]
            grad, _ = alone(model, dataclasses.replace(example, labels=labels))
            # float32 sums in another order: tolerance relative to the largest entry
            torch.testing.assert_close(got[s][b], grad, rtol=1e-4,
                                       atol=1e-4 * float(grad.abs().max()))
            mixed += len(tokens) / len(trained) * got[s][b]
        # the steps' gradients, weighted by their token shares, make the example's
        torch.testing.assert_close(mixed, whole[b], rtol=1e-4,
                                   atol=1e-4 * float(whole[b].abs().max()))
        for s in set(got) - set(runs[b]):
            assert not got[s][b].any()  # no such step: zero


def test_hadamard_and_projection_preserve_inner_products():
    from scipy.linalg import hadamard as reference

    x = torch.randn(3, 512, dtype=torch.float64)
    torch.testing.assert_close(hadamard(x), x @ torch.from_numpy(reference(512)).double())

    d, dim = 20_000, 2048
    proj = Projector(d, dim, seed=3, block=4096)  # 5 blocks, zero-padded
    assert (proj.blocks, proj.n) == (5, 20_480)
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(8, d, generator=gen)
    vectors = torch.cat([base, base + 0.5 * torch.randn(8, d, generator=gen)])  # correlated
    vectors[0] = 0
    vectors[0, 17] = 3.0  # all energy in one coordinate: the signs + Hadamard spread it
    exact = vectors @ vectors.T
    projected = proj(vectors) @ proj(vectors).T
    scale = vectors.norm(dim=1)
    error = (projected - exact).abs() / (scale[:, None] * scale[None, :])
    assert error.max() < 0.12  # JL: about 3 / sqrt(dim)
    cos = lambda m: m / (m.diagonal().sqrt()[:, None] * m.diagonal().sqrt()[None, :])
    assert (cos(projected) - cos(exact))[8:, :8].abs().max() < 0.1
    torch.testing.assert_close(proj(vectors), Projector(d, dim, seed=3, block=4096)(vectors))
    with pytest.raises(CurateError, match="projection dimension 30000"):
        Projector(d, 30_000)


# ---------------------------------------------------------------- warm-up snapshots
def test_kept_snapshots_hold_weights_moments_and_the_step_lr(pool, tiny):
    store, _ = pool
    select(store, "random", "twelve", budget=12)
    config = TrainConfig(model=str(tiny), method="lora", max_steps=6, batch_tokens=256,
                         lora_r=4, max_tokens=64, lr=1e-2)
    plain = finetune(store, "twelve", config)
    kept = finetune(store, "twelve", TrainConfig(**{**config.__dict__, "keep_checkpoints": 3}))
    assert not (plain.path / "checkpoints").exists()
    assert kept.run_id != plain.run_id and plain.run_id.startswith("twelve-lora-s0-")
    steps = sorted(p.name for p in (kept.path / "checkpoints").iterdir())
    assert steps == ["step-000002", "step-000004", "step-000006"]
    lrs = pq.read_table(kept.path / "loss.parquet")["lr"].to_pylist()
    meta = json.loads((kept.path / "checkpoints" / "step-000004" / "snapshot.json").read_text())
    assert meta["step"] == 4 and meta["lr"] == pytest.approx(lrs[3])


# ---------------------------------------------------------------- the scorer
def test_influence_scores_land_in_the_view_and_features_are_reused(pool, tiny):
    from typer.testing import CliRunner

    from curate.cli import app

    store, target = pool
    scorer = tiny_scorer(store, tiny, target)
    with pytest.raises(CurateError, match="warm-up run is not trained yet"):
        run_scorer(store, scorer)  # the scorer never trains: prepare_scorer does
    assert not (store.root / "selections" / "influence-warmup-16-s0").exists()
    report = run_influence(store, scorer)
    assert (report.scored, report.skipped) == (36, 0)
    assert scorer.computed == 2 * (36 + 4)  # every pool and target example, per snapshot
    got = rows(store, "SELECT influence, influence_max, grad_norm, params FROM scores_influence")
    assert len(got) == 36
    assert all(-1 <= i <= m <= 1 and g > 0 for i, m, g, _ in got)
    params = json.loads(got[0][3])
    assert params["warmup"]["rows"] == 16 and params["dim"] == 512 and params["target"]
    run = store.root / "runs" / scorer.run_id
    assert len(list((run / "checkpoints").glob("step-*"))) == 2
    assert rows(store, "SELECT count(*) FROM selection_members "
                       "WHERE selection = 'influence-warmup-16-s0'") == [(16,)]
    folders = sorted((store.root / "gradients").iterdir())
    assert len(folders) == 4  # 2 snapshots x (Adam-preconditioned pool, plain target)
    parts = {p: p.stat().st_mtime_ns for p in (store.root / "gradients").rglob("part-*")}
    one = pq.read_table(next(iter(parts)))
    assert str(one.schema.field("features").type) == "fixed_size_list<element: halffloat>[512]"

    # same configuration again: nothing to score
    again = tiny_scorer(store, tiny, target)
    assert run_influence(store, again).scored == 0 and again.computed == 0
    # scores lost, features kept: rescored from the gradient store without any gradient
    for part in (store.root / "scores" / "influence").rglob("part-*.parquet"):
        part.unlink()
    rescored = tiny_scorer(store, tiny, target)
    assert run_influence(store, rescored).scored == 36 and rescored.computed == 0
    assert sorted(r[0] for r in rows(store, "SELECT influence FROM scores_influence")) == \
        pytest.approx(sorted(r[0] for r in got))
    # a new target: a new score configuration; only its own gradients are computed
    other = tiny_scorer(store, tiny, "source:colours")
    assert other.key != scorer.key
    assert run_influence(store, other).scored == 36 and other.computed == 2 * 12
    after = {p: p.stat().st_mtime_ns for p in (store.root / "gradients").rglob("part-*")}
    assert {p: after[p] for p in parts} == parts
    # the view feeds every selector
    sel = select(store, "topk", "influential", budget=5, score="influence")
    assert len(sel.ids) == 5
    # an existing run with snapshots serves as the warm-up, from the command line too
    reuse = tiny_scorer(store, tiny, target, warmup=None, warmup_run=scorer.run_id)
    assert reuse.params["warmup"] == {"run": scorer.run_id}
    res = CliRunner().invoke(app, [
        "score", "influence", "--target", str(target), "--warmup-run", scorer.run_id,
        "--dim", "512", "--checkpoints", "2", "--max-tokens", "64", "--json",
        "--store", str(store.root)])
    assert res.exit_code == 0, res.output
    assert '"scored": 36' in res.output
    assert json.loads(rows(store, "SELECT params FROM scores_influence LIMIT 1")[0][0]
                      )["warmup"] == {"run": scorer.run_id}
    assert {p: p.stat().st_mtime_ns for p in (store.root / "gradients").rglob("part-*")} \
        == after  # every feature read, none computed


def test_influence_errors_are_clear(pool, tiny, tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app

    store, target = pool
    with pytest.raises(CurateError, match="needs a target"):
        make_scorer("influence", store=store)
    with pytest.raises(CurateError, match="scorer 'lm' takes no option target"):
        make_scorer("lm", target="x")
    with pytest.raises(CurateError, match="either --warmup"):
        tiny_scorer(store, tiny, target, warmup_run="r")
    with pytest.raises(CurateError, match="no finished run 'nope'"):
        tiny_scorer(store, tiny, target, warmup=None, warmup_run="nope")
    with pytest.raises(CurateError, match="no target 'missing-target'"):
        tiny_scorer(store, tiny, "missing-target")
    with pytest.raises(CurateError, match="precondition 'sgd'"):
        tiny_scorer(store, tiny, target, precondition="sgd")
    select(store, "random", "four", budget=4)
    bare = finetune(store, "four", TrainConfig(model=str(tiny), method="lora", max_steps=1,
                                               lora_r=4, max_tokens=64))
    with pytest.raises(CurateError, match="kept no snapshots"):
        tiny_scorer(store, tiny, target, warmup=None, warmup_run=bare.run_id)
    res = CliRunner().invoke(app, ["score", "influence", "--store", str(store.root)])
    assert res.exit_code != 0 and "needs a target" in str(res.exception)
    res = CliRunner().invoke(app, ["score", "lm", "--dim", "8", "--store", str(store.root)])
    assert res.exit_code != 0 and "takes no option dim" in str(res.exception)


def test_step_influence_scores_every_step_and_feeds_expert_failures(tiny, tmp_path):
    """ReAct traces (two failed) and single-turn sums; the target: held-out sums."""
    import numpy as np
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.scoring.influence import StepInfluenceScorer
    from curate.selectors import Pool, make_selector
    from test_traces import TRACES

    store = Store(tmp_path / "store")
    sums = [{"instruction": f"Add {a} and {b}.", "output": f"The sum is {a + b}."}
            for a, b in zip(range(3, 27, 2), range(30, 18, -1))]
    ingest(store, [write_jsonl(tmp_path / "traces.jsonl", TRACES),
                   write_jsonl(tmp_path / "sums.jsonl", sums)])
    target = write_jsonl(tmp_path / "held_out.jsonl", [
        {"instruction": f"Add {a} and {b}.", "output": f"The sum is {a + b}."}
        for a, b in [(100, 7), (120, 9), (140, 11)]])
    options = {"store": store, "target": str(target), "model": str(tiny), "warmup": 8,
               "checkpoints": 2, "dim": 256, "max_tokens": 512, "lora_r": 4,
               "warmup_epochs": 2}
    empty = Pool(store, "source = 'traces'")
    try:  # before any step influence: the error names the command, target included
        with pytest.raises(CurateError, match=r"curate score step_influence --model \S+ "
                                              "--target T` first"):
            make_selector("expert-failures", step_score="step_influence.step_influence",
                          harmful="low", model=str(tiny)).fit(empty)
    finally:
        empty.close()
    steps = StepInfluenceScorer(**options)
    assert run_influence(store, steps).scored == 16
    got = rows(store, """
        SELECT source, step_influence, min_step_influence,
               len(list_filter(messages, lambda m: m.role = 'assistant'))
        FROM scores_step_influence JOIN examples USING (id)""")
    for source, values, low, turns in got:
        assert len(values) == turns and (turns > 1) == (source == "traces")
        assert all(-1 <= v <= 1 for v in values) and low == min(values)
    # a one-step example's step is the whole example: the influence scorer agrees
    run_influence(store, InfluenceScorer(**{**options, "warmup": None,
                                         "warmup_run": steps.run_id}))
    pairs = rows(store, "SELECT i.influence, s.step_influence[1] FROM scores_influence i "
                        "JOIN scores_step_influence s USING (id) JOIN examples e USING (id) "
                        "WHERE e.source = 'sums'")
    assert len(pairs) == 12
    assert [a for a, _ in pairs] == pytest.approx([b for _, b in pairs], abs=2e-3)
    # step features are stored: scores rebuilt from the command line compute no gradient
    computed = {p: p.stat().st_mtime_ns for p in (store.root / "gradients").rglob("part-*")}
    res = CliRunner().invoke(app, [
        "score", "step_influence", "--target", str(target), "--warmup-run", steps.run_id,
        "--dim", "256", "--checkpoints", "2", "--max-tokens", "512", "--json",
        "--store", str(store.root)])
    assert res.exit_code == 0, res.output
    assert '"scored": 16' in res.output
    assert {p: p.stat().st_mtime_ns for p in (store.root / "gradients").rglob("part-*")} \
        == computed

    # expert failures over the traces: low influence is harmful
    influence = dict(rows(store, "SELECT id, step_influence FROM scores_step_influence"))
    outcome = dict(rows(store, "SELECT id, success FROM pairs WHERE source = 'traces'"))
    normal = np.concatenate([influence[i] for i, ok in outcome.items() if ok])
    threshold = float(np.quantile(normal, 0.1))
    pool = Pool(store, "source = 'traces'")
    try:
        def fit(**params):
            return make_selector("expert-failures", step_score="step_influence.step_influence",
                                 harmful="low", model=str(tiny), **params).fit(pool)

        lenient = fit(threshold=-2.0)  # no influence is that low: only final steps masked
        assert sorted(m["turns"] for m in lenient.masks_.to_pylist()) == \
            [[True, False], [True, True, False]]
        calibrated = fit()  # harmful: below the successes' 10% quantile
        failed = {i for i, ok in outcome.items() if not ok}
        masks = {m["id"]: m["turns"] for m in calibrated.masks_.to_pylist()}
        assert set(masks) == {i for i in failed
                              if any(v >= threshold for v in influence[i][:-1])}
        for i, turns in masks.items():
            assert turns == [v >= threshold for v in influence[i][:-1]] + [False]
    finally:
        pool.close()


@pytest.mark.slow
@pytest.mark.corpora
def test_gsm8k_rows_are_more_influential_on_a_gsm8k_target(tmp_path):
    """The packaged SmolLM2: 6 rows each of GSM8K train, Code Alpaca and T0 in the pool, 3
    GSM8K test rows as the target; the GSM8K rows score highest on average."""
    def first(path, n):
        with path.open() as f:
            return [json.loads(next(f)) for _ in range(n)]

    gsm = first(corpora_path("gsm8k", "train.jsonl"), 6)
    code = json.loads(corpora_path("codealpaca", "code_alpaca_2k.json").read_text())[:6]
    t0 = first(corpora_path("t0", "data_per_template",
                            "adversarial_qa_dbert_answer_the_following_q.jsonl"), 6)
    store = Store(tmp_path / "store")
    ingest(store, [write_jsonl(tmp_path / f"{name}.jsonl", recs)
                   for name, recs in (("gsm8k", gsm), ("code", code), ("t0", t0))])
    target = write_jsonl(tmp_path / "gsm8k_test.jsonl",
                         first(corpora_path("gsm8k", "test.jsonl"), 3))
    scorer = InfluenceScorer(store=store, target=str(target), warmup=6, checkpoints=1,
                             dim=1024, max_tokens=64, seed=0)
    assert run_influence(store, scorer).scored == 18
    means = dict(rows(store, "SELECT source, avg(influence) FROM scores_influence "
                             "JOIN examples USING (id) GROUP BY source"))
    assert means["gsm8k"] > max(means["code"], means["t0"]), means
