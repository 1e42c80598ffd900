"""Every claim of the claims table, judged on a results file where it holds and on one where it does not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runners._claims import BY_ID, CLAIMS, DISAGREES, HOLDS, NOT_JUDGED, claims_markdown
from tests.conftest import ROOT
from tests.reportkit import paired, record, report_of

PI = {"samples": 50_000_000, "item_samples": 1_000_000, "method": "python"}
TINY = {"n": 20_000}


def speedups(experiment: str, config: tuple[str, int], speedup: float, params=None) -> list[dict]:
    return paired(experiment, {("serial", 1): [1.0, 1.0, 1.0], config: [1 / speedup] * 3},
                  params=params or {"n": 100})


def channels(pipe: float, queue: float, manager: float, value_array: float, shared: float) -> list[dict]:
    rows = []
    for payload in (64, 1_048_576):
        for channel, rate in [("queue", queue), ("pipe", pipe), ("value_array", value_array),
                              ("shared_memory", shared), ("manager", manager)]:
            rows.append({"channel": channel, "payload": payload, "messages": 100, "seconds": 1.0,
                         "msgs_per_s": rate, "MB_per_s": rate, "intact": True})
    return [record("ipc", "serial", 1, 1.0, 0, task="ipc", params={"messages": 100}, result=rows)]


def gil(lost: int, one: float, two: float, increments: int = 10_000_000) -> list[dict]:
    total = 2 * increments
    rows = [{"mode": "one thread", "threads": 1, "expected": total, "counter": total, "lost": 0,
             "seconds": one, "gil": True},
            {"mode": "2 threads", "threads": 2, "expected": total, "counter": total - lost, "lost": lost,
             "seconds": two, "gil": True}]
    return [record("gil", "serial", 1, one + two, 0, task="gil", params={"increments": increments},
                   result=rows)]


def chunks(one: float, rule: float, auto: float) -> list[dict]:
    records = [record("chunksize", "serial", 1, 0.005, 0, params=TINY)]
    for at, (chunk, wall) in enumerate([("1", one), ("rule", rule), ("auto", auto)], start=1):
        records.append(record("chunksize", "multiprocessing", 2, wall, at * 10, chunk=chunk, params=TINY))
    return records


def two_pools(pool: float, executor: float) -> list[dict]:
    return paired("pi", {("serial", 1): [1.6] * 3, ("multiprocessing", 2): [pool] * 3,
                         ("futures", 2): [executor] * 3}, task="pi", params=PI)


def startups(processes: float, threads: float) -> list[dict]:
    return [record("io", "serial", 1, 1.0, 0),
            record("io", "multiprocessing", 8, 0.2, 2, startup=processes),
            record("io", "threads", 8, 0.2, 3, startup=threads)]


def waits(backend: str, wall: float) -> list[dict]:
    return paired("io", {("serial", 1): [20.0] * 3, (backend, 200): [wall] * 3},
                  params={"n": 2_000, "seconds": 0.01}, task="iowait")


def shares(**copies: float) -> list[dict]:
    """A `sharing` result whose mechanisms added these copies of a 200 MB array (the rest: 0)."""
    rows = [{"mechanism": m, "approach": m, "workers": 2, "array_mb": 200.0, "startup_s": 0.5,
             "seconds": 0.3, "workers_mb": 50.0, "added_mb": 200.0 * copies.get(m, 0.0),
             "copies": copies.get(m, 0.0), "ok": True, "note": ""}
            for m in ("threads", "asyncio", "shared_memory", "pickle", "joblib_memmap", "ray_put",
                      "mpi_bcast")]
    return [record("data", "serial", 1, 5.0, 0, task="sharing", params={"megabytes": 200}, result=rows)]


def free_threaded(speedup: float, gil: bool = False) -> list[dict]:
    row = {"interpreter": "/usr/bin/python3.13t", "found": True, "version": "3.13.1", "gil": gil,
           "threads": 2, "serial_s": 1.0, "threads_s": 1.0 / speedup, "speedup": speedup, "right": True}
    return [record("free", "serial", 1, 2.0, 0, task="freethreaded", params={"n": 12}, result=[row])]


def primes(printed: int) -> tuple[list[dict], dict]:
    params = {"start": 100_000, "stop": 200_000}
    records = [record("primes", "serial", 1, 0.2, 0, task="primes", params=params, result=8392)]
    return records, {"params": params, "runs": [{"backend": "serial", "workers": 1, "seconds": 3.21,
                                                  "result": printed}]}


# claim id -> (records where it holds, records where it does not), each with the document block it needs
CASES = {
    "threads-held-back-cpu": (speedups("cpu", ("threads", 2), 0.95), speedups("cpu", ("threads", 2), 1.8)),
    "processes-parallel-cpu": (speedups("cpu", ("multiprocessing", 2), 1.9),
                               speedups("cpu", ("multiprocessing", 2), 1.1)),
    "threads-help-io": (speedups("io", ("threads", 8), 7.5), speedups("io", ("threads", 8), 1.5)),
    "asyncio-helps-io": (speedups("io", ("asyncio", 8), 7.5), speedups("io", ("asyncio", 8), 2.5)),
    "processes-help-io": (speedups("io", ("multiprocessing", 8), 6.0),
                          speedups("io", ("multiprocessing", 8), 2.0)),
    "processes-overkill-io": (startups(0.2, 0.0001), startups(0.03, 0.0001)),
    "pool-near-linear-pi": (speedups("pi", ("multiprocessing", 2), 1.8, PI),
                            speedups("pi", ("multiprocessing", 2), 1.2, PI)),
    "executor-near-linear-pi": (speedups("pi", ("futures", 2), 1.7, PI),
                                speedups("pi", ("futures", 2), 1.3, PI)),
    "pool-like-executor-pi": (two_pools(0.85, 0.88), two_pools(0.85, 1.2)),
    "pool-speeds-primes": (speedups("primes", ("multiprocessing", 2), 1.6),
                           speedups("primes", ("multiprocessing", 2), 1.0)),
    "startup-overhead-tiny": (paired("startup", {("serial", 1): [0.0001], ("multiprocessing", 2): [0.1]}),
                              paired("startup", {("serial", 1): [0.0001], ("multiprocessing", 2): [0.0005]})),
    "chunksize-one-slow": (chunks(5.0, 0.01, 0.009), chunks(0.015, 0.01, 0.009)),
    "chunksize-rule-good-start": (chunks(5.0, 0.011, 0.01), chunks(5.0, 0.03, 0.01)),
    "pipe-faster-than-queue-small": (channels(80, 60, 10, 90, 100), channels(55, 60, 10, 90, 100)),
    "pipe-faster-than-queue-large": (channels(80, 60, 10, 90, 100), channels(62, 60, 10, 90, 100)),
    "manager-much-slower": (channels(80, 60, 10, 90, 100), channels(80, 60, 45, 90, 100)),
    "shared-memory-for-big-data": (channels(80, 60, 10, 90, 130), channels(80, 60, 10, 90, 100)),
    "gil-counter-loses-updates": (gil(1234, 1.0, 1.3), gil(0, 1.0, 1.3)),
    "gil-two-threads-slower": (gil(0, 1.0, 1.3), gil(0, 1.0, 1.01)),
    # the document's section 11 table (headroom beside every run: 1.95)
    "asyncio-held-back-cpu": (speedups("cpu", ("asyncio", 2), 0.95), speedups("cpu", ("asyncio", 2), 1.8)),
    "multiprocessing-not-held-back": (speedups("cpu", ("multiprocessing", 2), 1.8),
                                      speedups("cpu", ("multiprocessing", 2), 1.1)),
    "joblib-not-held-back": (speedups("cpu", ("joblib", 2), 1.7), speedups("cpu", ("joblib", 2), 1.0)),
    "ray-not-held-back": (speedups("cpu", ("ray", 2), 1.75), speedups("cpu", ("ray", 2), 1.2)),
    "mpi4py-not-held-back": (speedups("cpu", ("mpi", 2), 1.9), speedups("cpu", ("mpi", 2), 0.9)),
    "threading-suited-io": (speedups("io", ("threads", 200), 150), speedups("io", ("threads", 200), 5)),
    "asyncio-massive-concurrency": (waits("asyncio", 0.15), waits("asyncio", 0.5)),  # 133 and 40 in flight
    "threads-share-directly": (shares(threads=0.0), shares(threads=1.0)),
    "asyncio-shares-directly": (shares(asyncio=0.01), shares(asyncio=2.0)),
    "processes-need-a-mechanism": (shares(shared_memory=1.0, pickle=2.7),
                                   shares(shared_memory=1.0, pickle=1.2)),
    "joblib-serialises-automatically": (shares(shared_memory=1.0, joblib_memmap=1.1),
                                        shares(shared_memory=1.0, joblib_memmap=2.6)),
    "ray-distributed-objects": (shares(ray_put=1.0), shares(ray_put=2.9)),
    "mpi4py-communicates": (shares(mpi_bcast=1.0), shares(mpi_bcast=0.1)),
    "free-threaded-threads-parallel": (free_threaded(1.8), free_threaded(1.0)),
}


def verdict(tmp_path: Path, claim: str, records: list[dict], document: dict | None = None):
    experiment = records[0]["experiment"]
    meta = [{"name": experiment, "title": experiment, "params": records[0]["params"],
             "document": {**(document or {}), "claims": [claim]}}]
    report = report_of(tmp_path, records, meta)
    (exp,) = report.experiments
    (judgement,) = exp.judgements
    return judgement, (tmp_path / "report.md").read_text()


def test_every_claim_of_the_table_has_both_cases():
    assert set(CASES) | {"printed-results-correct"} == set(BY_ID)


@pytest.mark.parametrize("claim", sorted(CASES))
def test_each_claim_holds_on_results_where_it_holds(tmp_path, claim):
    judgement, markdown = verdict(tmp_path, claim, CASES[claim][0])
    assert judgement.verdict == HOLDS, judgement.text
    assert "| holds (" in markdown


@pytest.mark.parametrize("claim", sorted(CASES))
def test_each_claim_disagrees_on_results_where_it_does_not_and_says_the_value(tmp_path, claim):
    judgement, markdown = verdict(tmp_path, claim, CASES[claim][1])
    assert judgement.verdict == DISAGREES, judgement.text
    shown = re.search(r": (-?[\d.,]+); the claim needs", judgement.text)
    assert shown, judgement.text
    assert float(shown.group(1).replace(",", "")) == pytest.approx(judgement.value, rel=0.01, abs=0.01)
    assert not BY_ID[claim].passes(judgement.value)
    assert "| DISAGREES (" in markdown


def test_printed_results_are_judged_by_the_tasks_own_check_both_ways(tmp_path):
    right, document = primes(8392)
    judgement, _ = verdict(tmp_path / "right", "printed-results-correct", right, document)
    assert judgement.verdict == HOLDS
    wrong, document = primes(8713)
    judgement, markdown = verdict(tmp_path / "wrong", "printed-results-correct", wrong, document)
    assert judgement.verdict == DISAGREES and "the sieve of Eratosthenes counts 8392" in judgement.text
    assert "8713 (wrong: the sieve of Eratosthenes counts 8392)" in markdown  # the document result column


def test_a_run_too_small_for_the_predicate_is_not_judged(tmp_path):
    judgement, _ = verdict(tmp_path / "gil", "gil-counter-loses-updates",
                           gil(0, 1.0, 1.3, increments=1_000_000))
    assert judgement.verdict == NOT_JUDGED and "10,000,000 increments" in judgement.text
    small_pi = {**PI, "samples": 2_000_000}
    judgement, _ = verdict(tmp_path / "pi", "pool-near-linear-pi",
                           speedups("pi", ("multiprocessing", 2), 1.2, small_pi))
    assert judgement.verdict == NOT_JUDGED and judgement.text.startswith("not judged at this size")


def test_a_claim_whose_rows_did_not_run_gets_no_verdict_but_the_reason(tmp_path):
    judgement, _ = verdict(tmp_path, "threads-help-io", speedups("io", ("asyncio", 8), 7.0))
    assert judgement.verdict is None and "no threads x8 row" in judgement.text


def test_verdicts_use_exactly_three_words():
    words = {HOLDS, DISAGREES, NOT_JUDGED}
    assert words == {"holds", "DISAGREES", "not judged at this size"}
    for claim in CLAIMS:
        assert claim.direction in (">=", "<=") and claim.why and claim.predicate and claim.original


def test_the_readme_prints_the_claims_table_as_the_code_has_it():
    assert claims_markdown() in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_batch_file_names_only_claims_of_the_table(tmp_path):
    import runners

    bad = tmp_path / "b.yaml"
    bad.write_text("experiments: [{name: a, task: tiny, document: {claims: [threads-help-oi]}}]\n")
    with pytest.raises(runners.ConfigError) as caught:
        runners.load_matrix(bad)
    assert "unknown claim 'threads-help-oi' (did you mean 'threads-help-io'?)" in str(caught.value)


def test_a_timing_inside_one_run_is_marked_noisy_when_the_machine_was_busy(tmp_path):
    busy = channels(80, 60, 10, 90, 100)
    busy[0]["headroom"] = 1.4
    judgement, _ = verdict(tmp_path / "busy", "pipe-faster-than-queue-small", busy)
    assert judgement.verdict == HOLDS and judgement.noisy == ("headroom 1.40",)
    judgement, _ = verdict(tmp_path / "quiet", "pipe-faster-than-queue-small", channels(80, 60, 10, 90, 100))
    assert judgement.noisy == ()


def test_a_speed_up_against_a_headroom_too_low_to_tell_parallel_from_held_back_is_not_judged(tmp_path):
    busy = paired("cpu", {("serial", 1): [1.0] * 3, ("threads", 2): [1.0] * 3}, params={"n": 100},
                  headroom=1.1)  # GIL-bound threads at 1.0x would read 0.91 of this headroom
    judgement, _ = verdict(tmp_path / "busy", "multiprocessing-not-held-back", busy)
    assert judgement.verdict is None and "no multiprocessing x2 row" in judgement.text
    busy = paired("cpu", {("serial", 1): [1.0] * 3, ("multiprocessing", 2): [1.0] * 3}, params={"n": 100},
                  headroom=1.1)
    judgement, _ = verdict(tmp_path / "busy2", "multiprocessing-not-held-back", busy)
    assert judgement.verdict is None and "headroom beside multiprocessing x2 was 1.10" in judgement.text


def test_the_free_threaded_claim_needs_an_interpreter_without_its_gil(tmp_path):
    judgement, _ = verdict(tmp_path / "gil", "free-threaded-threads-parallel", free_threaded(1.0, gil=True))
    assert judgement.verdict is None and "runs with its GIL enabled" in judgement.text
    none = [record("free", "serial", 1, 0.0, 0, task="freethreaded", params={"n": 12}, result=[
        {"interpreter": None, "found": False, "note": "no free-threaded interpreter found (looked for x)"}])]
    judgement, _ = verdict(tmp_path / "none", "free-threaded-threads-parallel", none)
    assert judgement.verdict is None and "no free-threaded interpreter found" in judgement.text


def test_a_sharing_mechanism_that_is_not_installed_gets_no_verdict_but_the_reason(tmp_path):
    rows = shares(ray_put=1.0)
    ray = next(r for r in rows[0]["result"] if r["mechanism"] == "ray_put")
    ray.update(copies=None, added_mb=None, ok=None, note="not installed: ray (pip install 'runners[ray]')")
    judgement, _ = verdict(tmp_path, "ray-distributed-objects", rows)
    assert judgement.verdict is None and "not installed: ray" in judgement.text


def test_a_headroom_reading_above_two_is_taken_as_two_for_two_workers(tmp_path):
    # the lone spin slowed by a neighbour reads 2.4; two workers can gain 2x at most
    records = paired("cpu", {("serial", 1): [1.0] * 3, ("multiprocessing", 2): [1 / 1.7] * 3},
                     params={"n": 100}, headroom=2.4)
    judgement, _ = verdict(tmp_path, "multiprocessing-not-held-back", records)
    assert judgement.verdict == HOLDS and judgement.value == pytest.approx(0.85)  # not 1.7 / 2.4 = 0.71
