"""The decision store: a key without a valid answer is decided again on a re-run,
and a key decided again takes its new answer; a reused decision made otherwise
than the job would make it says why."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from engine.decisions import DecisionStore, pending, reused
from engine.records import (DECISION_METHOD, DECISION_SCHEMA, PromptRequest, decision_row,
                            reasoning_row)


def request(case: str) -> PromptRequest:
    return PromptRequest("m", "baseline", case, 0, ({"role": "user", "content": case},),
                         ("Good", "Bad"), "Good", mode="reasoning")


def row(req: PromptRequest, text: str) -> dict:
    return reasoning_row(req, text, prompt_tokens=1, completion_tokens=1, latency=0.0,
                         backend="test", seed=0)


def test_an_answer_cut_by_the_token_budget_is_decided_again_and_the_last_answer_kept(
        tmp_path):
    store = DecisionStore(tmp_path)
    a, b = request("1"), request("2")
    store.write([row(a, '{"reasoning": "fine", "answer": "Good"}'),
                 row(b, '{"reasoning": "it goes on and on')])  # cut: no answer
    assert store.done_keys() == {a.key} and pending([a, b], store) == [b]
    assert store.load().set_index("case_id").loc["2", "y"] == -1  # the attempt is kept
    store.write([row(b, '{"reasoning": "short", "answer": "Bad"}')])  # the re-run
    d = store.load().set_index("case_id")
    assert len(d) == 2 and d.loc["2", "y"] == 0 and d.loc["2", "reasoning"] == "short"
    assert store.done_keys() == {a.key, b.key}
    store.write([row(b, '{"reasoning": "cut again')])  # a later attempt leaves the answer
    assert store.load().set_index("case_id").loc["2", "reasoning"] == "short"
    # A key decided again (`decision.reuse: same`) takes its new decision.
    store.write([row(a, '{"reasoning": "later", "answer": "Bad"}')])
    assert store.load().set_index("case_id").loc["1", "reasoning"] == "later"
    assert store.load().equals(DecisionStore(tmp_path).load())  # as a fresh read has it


def choice_request(case: str, content: str = "profile") -> PromptRequest:
    return PromptRequest("m", "baseline", case, 0, ({"role": "user", "content": content},),
                         ("Good", "Bad"), "Good")


def choice_row(req: PromptRequest, backend: str = "vllm", seed: int = 0) -> dict:
    return decision_row(req, "Good", {"Good": -0.2, "Bad": -1.7}, prompt_tokens=1,
                        completion_tokens=1, latency=0.0, backend=backend, seed=seed)


def test_a_row_keeps_how_it_was_made_and_a_shard_from_before_reads_as_unknown(tmp_path):
    """Each row is stamped with this lensaudit's method and its temperature; a
    shard written before these columns existed still loads, with both null."""
    store = DecisionStore(tmp_path)
    a, b = choice_request("1"), choice_request("2")
    store.write([choice_row(a)], temperature=0.7)
    old = pa.Table.from_pylist([choice_row(b)], schema=pa.schema(
        [f for f in DECISION_SCHEMA if f.name not in ("temperature", "method")]))
    pq.write_table(old, store.dir / "part-0-old.parquet")
    d = store.load().set_index("case_id")
    assert d.loc["1", "temperature"] == 0.7 and d.loc["1", "method"] == DECISION_METHOD
    assert pd.isna(d.loc["2", "temperature"]) and pd.isna(d.loc["2", "method"])
    assert store.done_keys() == {a.key, b.key}


def test_a_reused_decision_says_why_this_job_would_make_it_otherwise(tmp_path):
    """`reused` names each stored row a re-run takes that this job would make
    otherwise, and why; rows made as the job makes them pass silently."""
    store = DecisionStore(tmp_path)
    same, edited, hotter, reseeded, greedy, simulated, old, old_simulated = (
        choice_request(str(i)) for i in range(8))
    store.write([choice_row(same), choice_row(edited), choice_row(reseeded, seed=3)],
                temperature=1.0)
    store.write([choice_row(hotter), choice_row(greedy, seed=3)], temperature=0.0)
    store.write([choice_row(simulated, backend="simulated", seed=3)])  # no sampler: no temperature
    columns = [f for f in DECISION_SCHEMA if f.name not in ("temperature", "method")]
    pq.write_table(pa.Table.from_pylist([choice_row(old), choice_row(old_simulated, "simulated")],
                                        schema=pa.schema(columns)),
                   store.dir / "part-0-old.parquet")
    now = [same, choice_request(edited.case_id, "an edited profile"), hotter, reseeded,
           choice_request(greedy.case_id), simulated, old, old_simulated, choice_request("new")]
    why = {r.case_id: w for r, w in reused(now, store, temperature=1.0, seed=0)}
    assert why.pop("1").startswith("made with a different prompt")
    assert why.pop("2") == why.pop("4") == "made at temperature 0 (this job's is 1)"
    assert why.pop("3") == "made with seed 3 (this job's is 0)"
    assert why.pop("5") == "made with seed 3 (this job's is 0)"  # simulated rows are drawn
    assert why.pop("6").startswith("made by lensaudit before 2026-12-05")
    # Silent: the one made as this job makes it, the new one, and an old row
    # of a backend the method's change did not reach.
    assert why == {}
    # At temperature 0 the seed draws nothing (the greedy row under seed 3 is
    # as this job would make it), but it still draws a simulated row.
    why = {r.case_id: w for r, w in reused(now, store, temperature=0.0, seed=0)}
    assert set(why) == {"0", "1", "3", "5", "6"} and why["5"].startswith("made with seed 3")


def test_a_load_reads_only_new_shards_and_agrees_with_a_fresh_read(tmp_path, monkeypatch):
    """Loads after the first read only the shards written since (a job loads the
    store several times a wave), and give what a fresh store reads; a shard
    deleted meanwhile is noticed."""
    import engine.decisions._decide as decide

    store = DecisionStore(tmp_path)
    a, b = request("1"), request("2")
    first = store.write([row(a, '{"reasoning": "cut')])
    store.write([row(b, '{"reasoning": "b", "answer": "Good"}')])
    store.load()
    read = []
    monkeypatch.setattr(decide, "_read_table", lambda s, real=decide._read_table: (
        read.append(s.name), real(s))[1])
    again = store.load()
    assert read == [] and again.equals(DecisionStore(tmp_path).load())
    read.clear()
    newest = store.write([row(a, '{"reasoning": "a", "answer": "Bad"}')])
    d = store.load()
    assert read == [newest.name] and d.set_index("case_id").loc["1", "y"] == 0
    assert d.equals(DecisionStore(tmp_path).load())
    read.clear()
    first.unlink()
    assert len(store.load()) == 2 and len(read) == 2  # read afresh without the deleted one


def test_small_shards_merge_and_a_key_keeps_the_row_it_would_have_kept(tmp_path):
    """An engine writes a shard a batch; every `MERGE_AT` small shards written in a
    row become one, and what the store reads is what it read before the merge
    (the last valid answer per key, the first attempt of a key with none)."""
    from engine.decisions import _decide

    store = DecisionStore(tmp_path)
    reqs = [request(str(i)) for i in range(40)]
    for k in range(_decide.MERGE_AT + 6):  # rounds of answers, some cut, some again
        batch = [reqs[(3 * k + j) % 40] for j in range(5)]
        store.write([row(r, '{"reasoning": "cut' if (k + j) % 4 == 0 else
                         f'{{"reasoning": "round {k}", "answer": "Good"}}')
                     for j, r in enumerate(batch)])
        if k == 30:
            before_merge = store.load()  # the cache is carried through the merge
    assert len(store.shards()) == 7  # one merged, six since
    fresh = DecisionStore(tmp_path).load()
    assert store.load().equals(fresh) and len(before_merge) <= len(fresh) == 40
    unmerged = tmp_path / "unmerged"
    copy = DecisionStore(unmerged)  # the same writes, never merged
    _decide.MERGE_AT, saved = 10**9, _decide.MERGE_AT
    try:
        for k in range(saved + 6):
            batch = [reqs[(3 * k + j) % 40] for j in range(5)]
            copy.write([row(r, '{"reasoning": "cut' if (k + j) % 4 == 0 else
                            f'{{"reasoning": "round {k}", "answer": "Good"}}')
                        for j, r in enumerate(batch)])
    finally:
        _decide.MERGE_AT = saved
    assert len(copy.shards()) == saved + 6
    assert fresh.drop(columns="latency_s").equals(copy.load().drop(columns="latency_s"))
