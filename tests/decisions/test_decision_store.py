"""The decision store: a key without a valid answer is decided again on a re-run."""

from engine.decisions import DecisionStore, pending
from engine.records import PromptRequest, reasoning_row


def request(case: str) -> PromptRequest:
    return PromptRequest("m", "baseline", case, 0, ({"role": "user", "content": case},),
                         ("Good", "Bad"), "Good", mode="reasoning")


def row(req: PromptRequest, text: str) -> dict:
    return reasoning_row(req, text, prompt_tokens=1, completion_tokens=1, latency=0.0,
                         backend="test", seed=0)


def test_an_answer_cut_by_the_token_budget_is_decided_again_and_then_kept(tmp_path):
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
    store.write([row(a, '{"reasoning": "later", "answer": "Bad"}')])  # a valid one stays first
    assert store.load().set_index("case_id").loc["1", "reasoning"] == "fine"
