"""The shortest path through the real system: submit, run, record."""


def test_sub_runs_and_records_exit_code(qpy):
    job = qpy.sub("sh", "-c", "echo out; echo err >&2; exit 3")
    record = qpy.wait_status(job)
    assert record["status"] == "done"
    assert record["exit_code"] == 3
    assert (qpy.work / f"job_{job}.out").read_text() == "out\n"
    assert (qpy.work / f"job_{job}.err").read_text() == "err\n"
