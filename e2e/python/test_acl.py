"""ACLs over SASL_SSL with SCRAM users, with real clients (confluent-kafka and kcat).

One broker serves the module with the authorizer on and `super.users=User:admin`. `alice`
authenticates with SCRAM too but has no ACL: a topic is denied to her (produce fails with
TOPIC_AUTHORIZATION_FAILED and Metadata hides it), allowed once admin creates ACLs with
confluent-kafka's AdminClient, and denied again once they are deleted. Certificates come from
the SASL tests' helper (a throwaway CA made with openssl). Every wait is bounded.
"""

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from test_security import free_port, listening, make_certificates

REPO = Path(__file__).resolve().parents[2]
BROKER_BIN = Path(os.environ.get("OXBOW_BROKER_BIN", REPO / "target" / "debug" / "oxbow-broker"))
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
CLIENT_TIMEOUT = 20.0
MECHANISM = "SCRAM-SHA-512"
PASSWORDS = {"admin": "admin-secret", "alice": "alice-secret"}


class AuthorizingBroker:
    """A broker with one SASL_SSL listener, SCRAM users admin and alice, and ACLs enforced."""

    def __init__(self, workdir):
        if not BROKER_BIN.is_file():
            pytest.fail(f"{BROKER_BIN} not found: run `cargo build -p oxbow-broker` or set OXBOW_BROKER_BIN")
        self.ca, keystore = make_certificates(workdir)
        self.port = free_port()
        properties = workdir / "server.properties"
        properties.write_text("\n".join([
            f"listeners=SASL_SSL://{HOST}:{self.port}",
            f"log.dirs={workdir / 'data'}",
            "metrics.address=",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={keystore}",
            f"sasl.enabled.mechanisms={MECHANISM}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:admin",
            "",
        ]))
        scram = [arg for user, password in PASSWORDS.items()
                 for arg in ("--add-scram", f"{MECHANISM}=[name={user},password={password}]")]
        self.log_path = workdir / "broker.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OXBOW_")}
        env["NO_COLOR"] = "1"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(BROKER_BIN), "--config", str(properties), *scram],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not listening(self.port):
            if self.proc.poll() is not None:
                pytest.fail(f"broker exited with {self.proc.returncode}\n{self.tail()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"broker did not listen on {self.port}\n{self.tail()}")
            time.sleep(0.05)

    def settings(self, user):
        return {
            "bootstrap.servers": f"{HOST}:{self.port}",
            "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(self.ca),
            "sasl.mechanism": MECHANISM,
            "sasl.username": user,
            "sasl.password": PASSWORDS[user],
            "socket.timeout.ms": 10000,
        }

    def kcat(self, user, *args, stdin=None):
        command = ["kcat", "-b", f"{HOST}:{self.port}", "-X", "security.protocol=SASL_SSL",
                   "-X", f"ssl.ca.location={self.ca}", "-X", f"sasl.mechanisms={MECHANISM}",
                   "-X", f"sasl.username={user}", "-X", f"sasl.password={PASSWORDS[user]}"]
        return subprocess.run(command + list(args), input=stdin, capture_output=True, text=True,
                              timeout=60)

    def tail(self, lines=60):
        text = self.log_path.read_text(errors="replace")
        return "--- broker log ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"broker did not exit within 30 s of SIGTERM\n{self.tail()}")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    run = AuthorizingBroker(tmp_path_factory.mktemp("acl-broker"))
    yield run
    code = run.stop()
    assert code == 0, f"broker exited with {code} on SIGTERM\n{run.tail()}"


def create_topic(broker, topic):
    admin = AdminClient(broker.settings("admin"))
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(timeout=CLIENT_TIMEOUT)


def alice_grants(topic, group):
    """What alice needs to produce to and consume `topic` in `group`."""
    def allow(resource_type, name, operation):
        return AclBinding(resource_type, name, ResourcePatternType.LITERAL, "User:alice", "*",
                          operation, AclPermissionType.ALLOW)
    return [
        allow(ResourceType.TOPIC, topic, AclOperation.WRITE),
        allow(ResourceType.TOPIC, topic, AclOperation.READ),
        allow(ResourceType.GROUP, group, AclOperation.READ),
    ]


def create_acls(broker, acls):
    admin = AdminClient(broker.settings("admin"))
    for future in admin.create_acls(acls).values():
        future.result(timeout=CLIENT_TIMEOUT)


def acls_of(broker, topic):
    admin = AdminClient(broker.settings("admin"))
    found = admin.describe_acls(AclBindingFilter(
        ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, None, None,
        AclOperation.ANY, AclPermissionType.ANY)).result(timeout=CLIENT_TIMEOUT)
    return sorted(str(acl.operation) for acl in found)


def delete_alice_acls(broker):
    admin = AdminClient(broker.settings("admin"))
    found = admin.delete_acls([AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice", None,
        AclOperation.ANY, AclPermissionType.ANY)])
    return [acl for future in found.values() for acl in future.result(timeout=CLIENT_TIMEOUT)]


def produce(broker, user, topic, value):
    """Produces one record as `user` and returns the delivery error, or None."""
    producer = Producer({**broker.settings(user), "acks": "all", "enable.idempotence": False,
                         "message.timeout.ms": 10000})
    reports = []
    producer.produce(topic, value=value.encode(), on_delivery=lambda err, msg: reports.append(err))
    remaining = producer.flush(CLIENT_TIMEOUT)
    assert remaining == 0 and len(reports) == 1, f"no delivery report for {value}\n{broker.tail()}"
    return reports[0]


def visible_topics(broker, user):
    return set(AdminClient(broker.settings(user)).list_topics(timeout=CLIENT_TIMEOUT).topics)


def consume(broker, user, topic, group, count):
    consumer = Consumer({**broker.settings(user), "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    values = []
    deadline = time.monotonic() + 60
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, f"{message.error()}\n{broker.tail()}"
            values.append(message.value().decode())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values


def test_an_acl_denies_a_topic_to_a_scram_user_then_allows_it_with_confluent_kafka(broker):
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    group = f"billing-{topic}"
    create_topic(broker, topic)
    assert topic in visible_topics(broker, "admin")

    denied = produce(broker, "alice", topic, "refused")
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied
    assert topic not in visible_topics(broker, "alice"), "a topic alice may not describe is listed"

    create_acls(broker, alice_grants(topic, group))
    assert acls_of(broker, topic) == sorted(str(op) for op in (AclOperation.READ, AclOperation.WRITE))
    assert topic in visible_topics(broker, "alice")
    for value in ("one", "two"):
        assert produce(broker, "alice", topic, value) is None, f"alice may write now\n{broker.tail()}"
    assert consume(broker, "alice", topic, group, 2) == ["one", "two"]

    deleted = delete_alice_acls(broker)
    assert len(deleted) == 3, deleted
    denied = produce(broker, "alice", topic, "refused again")
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied
    assert topic not in visible_topics(broker, "alice")


def test_an_acl_denies_a_topic_to_a_scram_user_then_allows_it_with_kcat(broker):
    topic = f"kcat-acl-{uuid.uuid4().hex[:8]}"
    create_topic(broker, topic)

    refused = broker.kcat("alice", "-P", "-t", topic, stdin="refused\n")
    assert refused.returncode != 0, f"kcat produced without an ACL: {refused.stderr}"
    assert "authorization failed" in refused.stderr.lower(), refused.stderr

    create_acls(broker, alice_grants(topic, "kcat-readers"))
    lines = ["first", "second"]
    produced = broker.kcat("alice", "-P", "-t", topic, stdin="\n".join(lines) + "\n")
    assert produced.returncode == 0, f"{produced.stderr}\n{broker.tail()}"
    consumed = broker.kcat("alice", "-C", "-t", topic, "-o", "beginning", "-e", "-c", "2")
    assert consumed.returncode == 0, f"{consumed.stderr}\n{broker.tail()}"
    assert consumed.stdout.split() == lines
    delete_alice_acls(broker)
