"""The beginner examples in examples/python, run unchanged against a real oxbow-broker.

The examples hard-code localhost:9092, so one broker serves the whole session on that
port. Every wait in here has a deadline; consumers, which loop forever, are killed once
the expected output appeared.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
KAFKA_SERVER_PROPERTIES = REPO / "broker" / "tests" / "fixtures" / "kafka-4.1-server.properties"
BROKER_BIN = Path(os.environ.get("OXBOW_BROKER_BIN", REPO / "target" / "debug" / "oxbow-broker"))
HOST, PORT = "localhost", 9092
BOOTSTRAP = f"{HOST}:{PORT}"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts_connections(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path, lines=60):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as err:
        return f"(cannot read {path}: {err})"
    return f"--- last lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


def broker_env():
    """The environment minus OXBOW_* settings, so only the given flags configure the broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXBOW_")}
    env["NO_COLOR"] = "1"  # plain log lines in the log file
    return env


class BrokerRun:
    """An oxbow-broker process with its output in a log file."""

    def __init__(self, args, workdir):
        if not BROKER_BIN.is_file():
            pytest.fail(f"{BROKER_BIN} not found: run `cargo build -p oxbow-broker` or set OXBOW_BROKER_BIN")
        self.log_path = Path(workdir) / "broker.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(BROKER_BIN), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=broker_env(),
            )

    def wait_ready(self, host, port):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"broker exited with {self.proc.returncode} before listening on {host}:{port}\n{self.tail()}")
            if accepts_connections(host, port):
                return
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        pytest.fail(f"broker did not listen on {host}:{port} within {START_TIMEOUT}s\n{self.tail()}")

    def stop(self):
        """SIGTERM, then the exit code (killing the broker if it does not exit in time)."""
        if self.proc.poll() is not None:
            pytest.fail(f"broker had already exited with {self.proc.returncode}\n{self.tail()}")
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"broker did not exit within {STOP_TIMEOUT}s of SIGTERM\n{self.tail()}")

    def tail(self):
        return tail(self.log_path)


def kafka_server_properties(data_dir):
    """Apache Kafka 4.1's shipped config/server.properties with only its data directory changed."""
    lines = [
        f"log.dirs={data_dir}" if line.startswith("log.dirs=") else line
        for line in KAFKA_SERVER_PROPERTIES.read_text().splitlines()
    ]
    assert any(line.startswith("log.dirs=") for line in lines), KAFKA_SERVER_PROPERTIES
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session", params=["defaults", "kafka-server-properties"])
def broker(request, tmp_path_factory):
    """One broker on localhost:9092 per configuration, with a fresh data dir: the broker's own
    defaults, then Apache Kafka's shipped server.properties (clients on localhost:9092, the
    controller on localhost:9093, as Kafka's quick start runs it). Every example runs on both."""
    if accepts_connections("127.0.0.1", PORT):
        pytest.fail(f"port {PORT} is busy: stop whatever listens there (another broker?) and rerun")
    workdir = tmp_path_factory.mktemp(request.param)
    args = ["--log-dirs", str(workdir / "data")]
    if request.param == "kafka-server-properties":
        config = workdir / "server.properties"
        config.write_text(kafka_server_properties(workdir / "data"))
        args = ["--config", str(config)]
    run = BrokerRun([*args, "--metrics-address", f"127.0.0.1:{free_port()}"], workdir)
    run.node_id = 1 if request.param == "kafka-server-properties" else 0
    run.wait_ready(HOST, PORT)
    yield run
    code = run.stop()
    assert code == 0, f"broker exited with {code} on SIGTERM\n{run.tail()}"


class Output:
    """A running process whose combined stdout/stderr a thread collects, to wait for a line."""

    def __init__(self, args):
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            cwd=REPO,
        )
        self.lines = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, needle, timeout):
        """True once a line containing `needle` appeared, False at the deadline or exit."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                if any(needle in line for line in self.lines):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    return False
                self.changed.wait(min(left, 0.2))

    def text(self):
        with self.changed:
            return "\n".join(self.lines)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=5)


def example(name):
    return [sys.executable, "-u", str(EXAMPLES / "python" / name)]


def run_example(name, timeout=60):
    result = subprocess.run(
        example(name),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert result.returncode == 0, f"{name} exited with {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_hello_consumer_prints_what_hello_producer_sends(broker):
    consumer = Output(example("hello_consumer.py"))
    try:
        # Without a group the consumer starts at the end of the log, and we cannot see when
        # it got there: send again until it prints the message, up to a deadline.
        deadline = time.monotonic() + 60
        printed = False
        while not printed and time.monotonic() < deadline:
            assert consumer.proc.poll() is None, f"hello_consumer.py exited\n{consumer.text()}"
            run_example("hello_producer.py")
            printed = consumer.wait_for("Hello world", timeout=5)
        assert printed, f"hello_consumer.py never printed Hello world\n{consumer.text()}\n{broker.tail()}"
    finally:
        consumer.kill()


def test_confluent_producer_reports_every_delivery(broker):
    out = run_example("confluent_producer.py")
    delivered = [line for line in out.splitlines() if line.startswith("Delivered")]
    assert len(delivered) == 5, out
    assert "failed" not in out, out


def test_kcat_lists_broker_and_topics(broker):
    run_example("hello_producer.py")  # makes sure 'test' exists, whatever ran before
    result = subprocess.run(
        ["kcat", "-L", "-b", BOOTSTRAP],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"broker {broker.node_id} at localhost:{PORT}" in out, out
    assert 'topic "test"' in out, out


EXPECTED_ACTIONS = ["login", "view_page", "add_to_cart", "logout"]


def test_json_producer_events_read_back_as_json(broker):
    run_example("json_producer.py")
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + 30
        partitions = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic("user-activity")
            if not partitions:
                time.sleep(0.2)
        assert partitions, "metadata never listed topic 'user-activity'"
        assigned = [TopicPartition("user-activity", p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        events = []
        while len(events) < len(EXPECTED_ACTIONS) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                events.extend(json.loads(record.value.decode("utf-8")) for record in records)
    finally:
        consumer.close()
    assert sorted(e["action"] for e in events) == sorted(EXPECTED_ACTIONS), events
    for event in events:
        assert isinstance(event["user_id"], int), event
        assert isinstance(event["timestamp"], float), event


def test_json_consumer_reads_events_as_a_group(broker):
    run_example("json_producer.py")
    consumer = Output(example("json_consumer.py"))
    try:
        assert consumer.wait_for(": login", timeout=30), consumer.text()
    finally:
        consumer.kill()


def test_confluent_consumer_reads_as_a_group(broker):
    run_example("confluent_producer.py")
    consumer = Output(example("confluent_consumer.py"))
    try:
        assert consumer.wait_for("Received 'message", timeout=30), consumer.text()
    finally:
        consumer.kill()


def test_sample_server_properties_is_accepted(tmp_path):
    """The broker starts from examples/server.properties; flags override its address and data dir."""
    port = free_port()
    listener = f"PLAINTEXT://127.0.0.1:{port}"
    run = BrokerRun(
        [
            "--config", str(EXAMPLES / "server.properties"),
            "--listeners", listener,
            "--advertised-listeners", listener,
            "--log-dirs", str(tmp_path / "data"),
            "--metrics-address", f"127.0.0.1:{free_port()}",
        ],
        tmp_path,
    )
    try:
        run.wait_ready("127.0.0.1", port)
    finally:
        if run.proc.poll() is None:
            code = run.stop()
            assert code == 0, f"broker exited with {code} on SIGTERM\n{run.tail()}"
