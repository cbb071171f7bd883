"""TLS and SASL with real clients (kcat, confluent-kafka) against a real oxbow-broker.

One broker serves the module on four listeners: PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL,
with SCRAM credentials given by --add-scram. The certificates are made here with the openssl
command for the test only (a throwaway CA in a temporary directory). Every wait is bounded.
"""

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parents[2]
BROKER_BIN = Path(os.environ.get("OXBOW_BROKER_BIN", REPO / "target" / "debug" / "oxbow-broker"))
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
CLIENT_TIMEOUT = 20.0
ADMIN_PASSWORD = "admin-secret"


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


def run(args, cwd):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory):
    """A throwaway CA and a broker certificate for 127.0.0.1/localhost, as PEM files."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
         "-subj", "/CN=oxbow test CA"], directory)
    run(["openssl", "req", *ec, "-keyout", "broker.key", "-out", "broker.csr",
         "-subj", "/CN=localhost"], directory)
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run(["openssl", "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "broker.crt", "-days", "1", "-extfile", "san.ext"], directory)
    keystore = directory / "broker.pem"
    keystore.write_text((directory / "broker.crt").read_text() + (directory / "broker.key").read_text())
    return directory / "ca.pem", keystore


class SecureBroker:
    def __init__(self, workdir):
        if not BROKER_BIN.is_file():
            pytest.fail(f"{BROKER_BIN} not found: run `cargo build -p oxbow-broker` or set OXBOW_BROKER_BIN")
        self.ca, keystore = make_certificates(workdir)
        self.ports = {name: free_port() for name in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")}
        listeners = ",".join(f"{name}://{HOST}:{port}" for name, port in self.ports.items())
        properties = workdir / "server.properties"
        properties.write_text("\n".join([
            f"listeners={listeners}",
            f"log.dirs={workdir / 'data'}",
            "metrics.address=",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={keystore}",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "",
        ]))
        self.log_path = workdir / "broker.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OXBOW_")}
        env["NO_COLOR"] = "1"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(BROKER_BIN), "--config", str(properties),
                 "--add-scram", f"SCRAM-SHA-256=[name=admin,password={ADMIN_PASSWORD}]",
                 "--add-scram", f"SCRAM-SHA-512=[name=admin,password={ADMIN_PASSWORD}]"],
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

    def tail(self, lines=60):
        text = self.log_path.read_text(errors="replace")
        return "--- broker log ---\n" + "\n".join(text.splitlines()[-lines:])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"broker did not exit within 30 s of SIGTERM\n{self.tail()}")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    run = SecureBroker(tmp_path_factory.mktemp("secure-broker"))
    yield run
    code = run.stop()
    assert code == 0, f"broker exited with {code} on SIGTERM\n{run.tail()}"


def client_settings(broker, listener, mechanism=None, user="admin", password=ADMIN_PASSWORD):
    settings = {
        "bootstrap.servers": broker.bootstrap(listener),
        "security.protocol": listener,
        "socket.timeout.ms": 10000,
    }
    if "SSL" in listener:
        settings["ssl.ca.location"] = str(broker.ca)
    if mechanism:
        settings.update({"sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password})
    return settings


def list_brokers(settings):
    """The (id, host, port) of each broker in a Metadata answer to this client."""
    metadata = AdminClient(settings).list_topics(timeout=CLIENT_TIMEOUT)
    return sorted((b.id, b.host, b.port) for b in metadata.brokers.values())


def produce_and_consume(settings, count=5):
    topic = f"secured-{uuid.uuid4().hex[:8]}"
    producer = Producer({**settings, "acks": "all", "enable.idempotence": False})
    delivered = []
    for i in range(count):
        producer.produce(topic, key=b"k", value=f"record-{i}".encode(),
                         on_delivery=lambda err, msg: delivered.append(err))
    remaining = producer.flush(CLIENT_TIMEOUT)
    assert remaining == 0 and delivered == [None] * count, f"delivery: {delivered}"
    consumer = Consumer({**settings, "group.id": f"readers-{topic}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    values = []
    deadline = time.monotonic() + 60
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            values.append(message.value().decode())
    finally:
        consumer.close()
    assert values == [f"record-{i}" for i in range(count)]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_confluent_kafka_over_sasl_ssl_with_scram_produces_and_consumes(broker, mechanism):
    settings = client_settings(broker, "SASL_SSL", mechanism)
    assert list_brokers(settings) == [(0, HOST, broker.ports["SASL_SSL"])], "not the SASL_SSL listener"
    produce_and_consume(settings)


@pytest.mark.parametrize("user,password", [("admin", "wrong-secret"), ("nobody", ADMIN_PASSWORD)])
def test_confluent_kafka_with_wrong_scram_credentials_is_refused(broker, user, password):
    errors = []
    settings = {**client_settings(broker, "SASL_SSL", "SCRAM-SHA-512", user, password),
                "error_cb": errors.append}
    admin = AdminClient(settings)
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=10)
    admin.poll(1)  # serves error_cb
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_ssl_only_listener_serves_confluent_kafka(broker):
    settings = client_settings(broker, "SSL")
    assert list_brokers(settings) == [(0, HOST, broker.ports["SSL"])]
    produce_and_consume(settings)


def test_plain_over_sasl_plaintext_checks_the_scram_password(broker):
    settings = client_settings(broker, "SASL_PLAINTEXT", "PLAIN")
    assert list_brokers(settings) == [(0, HOST, broker.ports["SASL_PLAINTEXT"])]
    produce_and_consume(settings)
    errors = []
    wrong = {**client_settings(broker, "SASL_PLAINTEXT", "PLAIN", password="nope"), "error_cb": errors.append}
    admin = AdminClient(wrong)
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=10)
    admin.poll(1)  # serves error_cb
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def kcat(broker, listener, *args, mechanism=None, password=ADMIN_PASSWORD, stdin=None):
    command = ["kcat", "-b", broker.bootstrap(listener), "-X", f"security.protocol={listener}"]
    if "SSL" in listener:
        command += ["-X", f"ssl.ca.location={broker.ca}"]
    if mechanism:
        command += ["-X", f"sasl.mechanisms={mechanism}", "-X", "sasl.username=admin",
                    "-X", f"sasl.password={password}"]
    return subprocess.run(command + list(args), input=stdin, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("listener,mechanism", [
    ("SASL_SSL", "SCRAM-SHA-256"),
    ("SASL_SSL", "SCRAM-SHA-512"),
    ("SSL", None),
    ("SASL_PLAINTEXT", "PLAIN"),
])
def test_kcat_produces_and_consumes_over_each_secured_listener(broker, listener, mechanism):
    topic = f"kcat-{uuid.uuid4().hex[:8]}"
    lines = [f"{listener}-{i}" for i in range(3)]
    produced = kcat(broker, listener, "-P", "-t", topic, mechanism=mechanism, stdin="\n".join(lines) + "\n")
    assert produced.returncode == 0, f"{produced.stderr}\n{broker.tail()}"
    consumed = kcat(broker, listener, "-C", "-t", topic, "-o", "beginning", "-e", "-c", "3",
                    mechanism=mechanism)
    assert consumed.returncode == 0, f"{consumed.stderr}\n{broker.tail()}"
    assert consumed.stdout.split() == lines


def test_kcat_with_a_wrong_scram_password_is_refused(broker):
    listed = kcat(broker, "SASL_SSL", "-L", "-m", "10", mechanism="SCRAM-SHA-512", password="wrong")
    assert listed.returncode != 0, listed.stdout
    assert "uthentication" in listed.stderr, listed.stderr
