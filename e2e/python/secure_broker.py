"""A real oxbow-broker with TLS and SASL listeners for the Python client tests, and the client
helpers those tests share (confluent-kafka settings, a bounded consumer, kcat).

The certificates are made with the openssl command for the test only: a throwaway CA and a
broker certificate for 127.0.0.1/localhost in a temporary directory. Every wait is bounded.
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer

REPO = Path(__file__).resolve().parents[2]
BROKER_BIN = Path(os.environ.get("OXBOW_BROKER_BIN", REPO / "target" / "debug" / "oxbow-broker"))
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
CLIENT_TIMEOUT = 20.0


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def listening(port):
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _openssl(args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory):
    """A throwaway CA and a broker certificate for 127.0.0.1/localhost, as PEM files:
    (the CA's certificate, the broker's certificate and key in one file)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
              "-subj", "/CN=oxbow test CA"], directory)
    _openssl(["req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost"],
             directory)
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(["x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-CAcreateserial", "-out", "broker.crt", "-days", "1", "-extfile", "san.ext"], directory)
    keystore = directory / "broker.pem"
    keystore.write_text((directory / "broker.crt").read_text() + (directory / "broker.key").read_text())
    return directory / "ca.pem", keystore


class SecureBroker:
    """One broker process in `workdir` with a listener on a free port for each security protocol
    in `listeners`, the PEM key store of a fresh CA, `properties` (lines of server.properties)
    and `args` on its command line. Fails the test if it does not listen on every port in time."""

    def __init__(self, workdir, listeners, properties=(), args=()):
        if not BROKER_BIN.is_file():
            pytest.fail(f"{BROKER_BIN} not found: run `cargo build -p oxbow-broker` or set OXBOW_BROKER_BIN")
        self.ca, keystore = make_certificates(workdir)
        self.ports = {name: free_port() for name in listeners}
        config = workdir / "server.properties"
        config.write_text("\n".join([
            "listeners=" + ",".join(f"{name}://{HOST}:{port}" for name, port in self.ports.items()),
            f"log.dirs={workdir / 'data'}",
            "metrics.address=",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={keystore}",
            *properties,
            "",
        ]))
        self.log_path = workdir / "broker.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OXBOW_")}
        env["NO_COLOR"] = "1"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(BROKER_BIN), "--config", str(config), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        for port in self.ports.values():
            while not listening(port):
                if self.proc.poll() is not None:
                    pytest.fail(f"broker exited with {self.proc.returncode}\n{self.tail()}")
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(f"broker did not listen on {port}\n{self.tail()}")
                time.sleep(0.05)

    def bootstrap(self, listener):
        return f"{HOST}:{self.ports[listener]}"

    def client_settings(self, listener, mechanism=None, user=None, password=None):
        """confluent-kafka (librdkafka) settings for a client of `listener`, trusting the CA."""
        settings = {
            "bootstrap.servers": self.bootstrap(listener),
            "security.protocol": listener,
            "socket.timeout.ms": 10000,
        }
        if "SSL" in listener:
            settings["ssl.ca.location"] = str(self.ca)
        if mechanism:
            settings.update({"sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password})
        return settings

    def tail(self, lines=60):
        text = self.log_path.read_text(errors="replace")
        return "--- broker log ---\n" + "\n".join(text.splitlines()[-lines:])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        """SIGTERM, and the exit code; fails the test if the broker does not exit within 30 s."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"broker did not exit within 30 s of SIGTERM\n{self.tail()}")


def serve(broker):
    """A module fixture's body: yields `broker`, then checks it exits cleanly on SIGTERM."""
    yield broker
    code = broker.stop()
    assert code == 0, f"broker exited with {code} on SIGTERM\n{broker.tail()}"


def consume(settings, topic, group, count, commit=False, explain=lambda: ""):
    """Reads `topic` from the beginning in `group` until `count` values arrived or 60 s passed,
    and returns the values read; `commit` commits the offsets reached. A consumer error fails
    the test, with `explain()` added to the message."""
    consumer = Consumer({**settings, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    values = []
    deadline = time.monotonic() + 60
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, f"{message.error()}\n{explain()}"
            values.append(message.value().decode())
        if commit:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values


def kcat(settings, *args, stdin=None):
    """Runs kcat with the client `settings` (librdkafka names, as for confluent-kafka)."""
    command = ["kcat", "-b", settings["bootstrap.servers"]]
    for key, value in settings.items():
        if key != "bootstrap.servers":
            command += ["-X", f"{key}={value}"]
    return subprocess.run(command + list(args), input=stdin, capture_output=True, text=True, timeout=60)
