"""Smoke tests of the benchmark harness (bench/): the maths, the table, the process and load utilities.

They run the real pieces briefly (a bare waitress app, the Python load generator for about a second) so that
`make bench` does not rot between the runs that matter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench import harness, report
from bench.bots import write_echo_bot, write_lint_bot
from bench.cpu import PostgresBackends, cpu_between, cpu_snapshot, process_cpu_seconds, process_tree
from bench.databases import RowCounter, seed_sent_messages
from bench.load import PythonLoad, SteadyLoad, WrkLoad
from bench.payloads import APP_SECRET, PHONE_NUMBER_ID, outbound_id, sender_id, signed_bodies, signed_status_bodies
from bench.processes import ServerProcess, free_port, peak_rss_kib, time_command
from bench.results import Row, Target, skipped
from bench.stats import interleave, median, percentile, ratio
from chatops.channels import StatusUpdate, parse_webhook
from chatops.channels.signature import verify_signature

ROOT = Path(__file__).resolve().parent.parent


def test_median_ratio_percentile() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert median([]) is None
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="outside"):
        percentile(values, 101)


def test_interleave_alternates_the_order_each_round() -> None:
    calls: list[str] = []

    def measure(name: str, value: float) -> object:
        return lambda: calls.append(name) or value

    results = interleave({"a": measure("a", 1.0), "b": measure("b", 2.0), "c": measure("c", 3.0)}, rounds=3)
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert results == {"a": [1.0] * 3, "b": [2.0] * 3, "c": [3.0] * 3}


def test_targets_decide_pass_and_fail() -> None:
    at_least_half = Target(">=", 0.5)
    assert Row("w", "b", value=60.0, baseline=100.0, target=at_least_half).status == "pass"
    assert Row("w", "b", value=40.0, baseline=100.0, target=at_least_half).status == "FAIL"
    assert Row("w", "p99", value=49.0, unit="ms", target=Target("<", 50, on="value")).status == "pass"
    assert Row("s", "help", value=0.5, baseline=0.1, target=Target("<=", 0.3, on="extra")).status == "FAIL"
    assert Row("s", "help", value=0.3, baseline=0.1, target=Target("<=", 0.3, on="extra")).status == "pass"
    assert Row("w", "b", value=None, baseline=1.0, target=at_least_half).status == "invalid"
    assert Row("w", "b", value=1.0, baseline=1.0, target=at_least_half).mark_invalid("lost rows").status == "invalid"
    assert Row("w", "a", value=1.0).status == "—"
    assert skipped("lint", "x", "not yet").status == "skipped"
    assert Target(">=", 0.5).describe("req/s") == "ratio ≥ 0.5"
    assert Target("<", 50, on="value").describe("ms") == "< 50 ms"
    assert Target("<=", 0.3, on="extra").describe("s") == "extra ≤ 0.3 s"


def test_table_shows_value_baseline_ratio_target_and_result() -> None:
    rows = [
        Row(
            "webhooks",
            "b. serve, 16 conn: req/s",
            value=1500.0,
            unit="req/s",
            baseline=3000.0,
            baseline_label="a",
            target=Target(">=", 0.5),
            note="wrk",
        ),
        skipped("lint", "lint-templates", "`chatops lint-templates` does not exist | yet"),
    ]
    table = report.render_table(rows).splitlines()
    assert table[0] == "| benchmark | figure | value | baseline | ratio | target | result | notes |"
    assert table[2] == (
        "| webhooks | b. serve, 16 conn: req/s | 1,500 req/s | 3,000 req/s (a) | 0.50× | ratio ≥ 0.5 | pass | wrk |"
    )
    assert (
        table[3]
        == "| lint | lint-templates | — | — | — | — | skipped | `chatops lint-templates` does not exist \\| yet |"
    )
    assert report.format_number(0.1234, "s") == "0.123 s"
    assert report.format_number(12.34, "ms") == "12.3 ms"


def test_results_are_appended_and_the_readme_table_replaced(tmp_path: Path) -> None:
    results, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n{report.LATEST_START}\nold table\n{report.LATEST_END}\nafter\n")
    report.append_results(results, "## first\n")
    report.append_results(results, "## second\n")
    assert results.read_text().startswith("# Benchmark results")
    assert results.read_text().index("## first") < results.read_text().index("## second")
    assert report.update_latest(readme, "## second\n")
    assert readme.read_text() == (f"# Benchmarks\n{report.LATEST_START}\n## second\n{report.LATEST_END}\nafter\n")


def test_discovery_finds_every_benchmark_and_what_it_needs() -> None:
    benchmarks = harness.discover()
    names = [b.name for b in benchmarks]
    names_in_order = ["startup", "lint", "webhooks", "gunicorn_processes", "end_to_end", "scale", "wakeups", "replay"]
    assert names == [*names_in_order, "convtest", "memory"]
    chosen = harness.select(benchmarks, ["memory"])
    assert [b.name for b in chosen] == ["webhooks", "end_to_end", "memory"]
    with pytest.raises(SystemExit):
        harness.select(benchmarks, ["nope"])


def test_signed_bodies_have_distinct_ids_and_valid_signatures() -> None:
    bodies = signed_bodies("t1", 20, senders=4)
    assert len({item.body for item in bodies}) == 20
    assert b'"id":"wamid.BENCHt1.00000003"' in bodies[3].body
    for item in bodies:
        verify_signature(item.body, item.signature, APP_SECRET)  # raises when wrong


def test_status_bodies_are_signed_status_updates_in_a_mix() -> None:
    bodies = signed_status_bodies("s1", 6, senders=2)
    statuses = []
    for n, item in enumerate(bodies):
        verify_signature(item.body, item.signature, APP_SECRET)
        (event,) = parse_webhook("whatsapp", item.body)
        assert isinstance(event, StatusUpdate)
        assert (event.provider_message_id, event.user_id) == (outbound_id("s1", n), sender_id(n % 2))
        statuses.append(event.status)
    assert statuses == ["sent", "delivered", "read"] * 2


def test_process_cpu_seconds_counts_every_thread_of_a_process() -> None:
    before = process_cpu_seconds(os.getpid())
    assert before is not None
    deadline = time.thread_time() + 0.15
    while time.thread_time() < deadline:  # burn 150 ms of CPU
        pass
    after = process_cpu_seconds(os.getpid())
    assert after is not None
    assert after - before >= 0.1  # ticks are 10 ms
    assert process_cpu_seconds(2**22 + 12345) is None
    # A pid that appeared in between counts from zero; one that ended is not counted.
    assert cpu_between({1: 1.0, 2: 5.0}, {1: 1.5, 3: 0.25}) == pytest.approx(0.75)


def test_process_tree_counts_the_children_of_a_server() -> None:
    # A shell whose child burns CPU: a server whose web process is its child (granian, Gunicorn).
    burn = "import time; end = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    parent = subprocess.Popen(["sh", "-c", f"{sys.executable} -c '{burn}'; true"])
    try:
        deadline = time.monotonic() + 10
        while len(tree := process_tree(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree[0] == parent.pid
        assert len(tree) == 2
        deadline = time.monotonic() + 20  # the child burns its 0.3 s of CPU however loaded the machine is
        while sum(cpu_snapshot(tree).values()) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sum(cpu_snapshot(tree).values()) >= 0.25  # the child's CPU, not only the idle shell's
    finally:
        for pid in reversed(process_tree(parent.pid)):
            os.kill(pid, 9)
        parent.wait()


@pytest.mark.postgres
def test_postgres_backends_are_the_pool_of_one_database(tmp_path: Path) -> None:
    from chatops.db.connect import create_db_engine
    from chatops.db.migrate import migrate
    from tests.databases import postgres_database, postgres_server_url

    with postgres_database() as url:
        engine = create_db_engine(url)  # application_name "chatops", like chatops serve
        migrate(engine)
        engine.dispose()
        backends = PostgresBackends(postgres_server_url(), str(sa.engine.make_url(url).database))
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT count(*) FROM generate_series(1, 300000)").scalar_one()
                (pid,) = backends.pids()
                assert pid == connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
                snapshot = backends.snapshot()
                assert snapshot is not None
                assert set(snapshot) == {pid}
            seed_sent_messages(url, ["wamid.A", "wamid.B", "wamid.C"], ["u1", "u2"], account_id=PHONE_NUMBER_ID)
            assert RowCounter(url).count("outbound_messages", "status = 'sent'") == 3
            assert RowCounter(url).count("conversations") == 2
        finally:
            backends.close()
            engine.dispose()


def test_generated_bots_are_valid(tmp_path: Path) -> None:
    from chatops.config.bot import validate_bot

    stages = write_lint_bot(tmp_path / "lint", stages=10, templates=50)
    result = validate_bot(stages)
    assert result.problems == ()
    assert result.bot is not None
    assert len(result.bot.template_files) == 50
    for ai in (True, False):
        assert validate_bot(write_echo_bot(tmp_path / f"echo-{ai}", ai=ai)).problems == ()


def test_peak_rss_reads_vmhwm() -> None:
    mine = peak_rss_kib(os.getpid())
    assert mine is not None
    assert mine > 1024  # a Python process with pytest loaded is well above 1 MiB
    assert peak_rss_kib(2**22 + 12345) is None  # beyond pid_max: no such process


def test_time_command_measures_and_checks_the_exit_code() -> None:
    assert 0 < time_command([sys.executable, "-c", "pass"]) < 10
    with pytest.raises(RuntimeError, match="exited with 3"):
        time_command([sys.executable, "-c", "raise SystemExit(3)"])


@pytest.fixture
def bare_app(tmp_path: Path) -> Iterator[ServerProcess]:
    port = free_port()
    server = ServerProcess(
        [sys.executable, "-m", "bench.bare_app", "--port", str(port), "--threads", "4"],
        port=port,
        log=tmp_path / "bare.log",
        cwd=ROOT,
    )
    with server:
        yield server
    assert server.process is None
    assert server.peak_rss_kib is not None


@pytest.mark.slow
def test_python_load_generator_against_the_bare_app(bare_app: ServerProcess, tmp_path: Path) -> None:
    bodies = signed_bodies("py", 40)
    result = PythonLoad(processes=2).run(
        port=bare_app.port,
        path="/webhooks/whatsapp",
        bodies=bodies,
        connections=4,
        duration=1.0,
        work_dir=tmp_path,
        max_requests=40,
    )
    assert (result.ok, result.non_2xx, result.errors, result.reused) == (40, 0, 0, 0)
    assert result.p50_ms is not None
    assert result.p99_ms is not None
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.rps > 0
    assert bare_app.current_rss_peak()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_wrk_script_cycles_bodies_and_reports(bare_app: ServerProcess, tmp_path: Path) -> None:
    executable = shutil.which("wrk")
    assert executable is not None
    result = WrkLoad(executable, threads=2).run(
        port=bare_app.port,
        path="/webhooks/whatsapp",
        bodies=signed_bodies("wrk", 10),
        connections=4,
        duration=1.0,
        work_dir=tmp_path,
    )
    assert result.generator == "wrk"
    assert result.ok > 10
    assert result.reused > 0  # 10 bodies cannot last a second: repeats are counted
    assert result.non_2xx == 0
    assert result.p99_ms is not None


@pytest.mark.slow
def test_steady_load_keeps_its_rate_and_times_every_request(bare_app: ServerProcess) -> None:
    rate, connections = 40.0, 2
    load = SteadyLoad(
        port=bare_app.port,
        path="/webhooks/whatsapp",
        make_body=lambda n: signed_bodies(f"steady{n}", 1)[0],
        rate=rate,
        connections=connections,
    )
    with load:
        started = time.monotonic()
        time.sleep(0.5)
        middle = time.monotonic()
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    assert load.acks
    assert all(ack.status == 200 and ack.ms > 0 for ack in load.acks)
    assert len(load.acks) <= rate * elapsed + connections  # paced: never faster than the rate
    first, second = load.between(started, middle), load.between(middle, time.monotonic())
    assert first
    assert second
    assert len(first) + len(second) <= len(load.acks)


@pytest.mark.slow
@pytest.mark.postgres
def test_scale_prune_measures_a_day_of_history_under_webhooks(tmp_path: Path) -> None:
    """bench/scale.py's prune figures, one short round on a small grown database: the real serve and prune."""
    from bench.grow import grow
    from bench.scale import _measure_prune
    from chatops.db.connect import create_db_engine
    from chatops.db.migrate import migrate
    from tests.databases import postgres_database, postgres_server_url

    ctx = harness.Context(
        quick=True,
        root=ROOT,
        work_dir=tmp_path,
        python=sys.executable,
        chatops=harness.chatops_command(),
        database_server=postgres_server_url(),
        load=PythonLoad(),
    )
    with postgres_database() as url:
        engine = create_db_engine(url)
        try:
            migrate(engine)
            with engine.begin() as connection:
                grow(connection, messages=600, conversations=24)  # 60 days: a day is 10 messages
            deleted, cleared, latency = _measure_prune(
                ctx, engine, url, messages=600, note="test", rounds=1, warm_up=0.0
            )
            counter = RowCounter(url)
            remaining = counter.count("inbound_messages", "provider_message_id LIKE 'wamid.in.%'")
            cleared_raw = counter.count(
                "inbound_messages", "raw = '{}'::jsonb AND provider_message_id LIKE 'wamid.in.%'"
            )
            counter.close()
        finally:
            engine.dispose()
    # The oldest day went (10 inbound, 10 replies, 10 turns); the next day's traces and two days of raw payloads.
    assert "30 rows deleted (outbound 10, inbound 10, turns 10, conversations 0)" in deleted.note
    assert "30 rows cleared (traces 10, raw 20)" in cleared.note
    assert (remaining, cleared_raw) == (590, 20)
    for row in (deleted, cleared, latency):
        assert row.invalid is None, row.invalid  # every acknowledged webhook was stored
        assert row.value is not None
        assert row.value > 0
    assert latency.baseline is not None  # the quiet window's p99
    assert latency.status in ("pass", "FAIL")
