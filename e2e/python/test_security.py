"""TLS and SASL with real clients (kcat, confluent-kafka) against a real oxbow-broker.

One broker serves the module on four listeners: PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL,
with SCRAM credentials given by --add-scram and certificates from a throwaway CA
(secure_broker.py). Every wait is bounded.
"""

import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from secure_broker import CLIENT_TIMEOUT, HOST, SecureBroker, consume, kcat, serve

ADMIN_PASSWORD = "admin-secret"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    yield from serve(SecureBroker(
        tmp_path_factory.mktemp("secure-broker"),
        listeners=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        properties=["sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"],
        args=["--add-scram", f"SCRAM-SHA-256=[name=admin,password={ADMIN_PASSWORD}]",
              "--add-scram", f"SCRAM-SHA-512=[name=admin,password={ADMIN_PASSWORD}]"],
    ))


def client_settings(broker, listener, mechanism=None, user="admin", password=ADMIN_PASSWORD):
    """Client settings for `listener`, as admin unless told otherwise."""
    return broker.client_settings(listener, mechanism, user, password)


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
    values = consume(settings, topic, f"readers-{topic}", count)
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


def kcat_on(broker, listener, *args, mechanism=None, password=ADMIN_PASSWORD, stdin=None):
    settings = client_settings(broker, listener, mechanism, password=password)
    return kcat(settings, *args, stdin=stdin)


@pytest.mark.parametrize("listener,mechanism", [
    ("SASL_SSL", "SCRAM-SHA-256"),
    ("SASL_SSL", "SCRAM-SHA-512"),
    ("SSL", None),
    ("SASL_PLAINTEXT", "PLAIN"),
])
def test_kcat_produces_and_consumes_over_each_secured_listener(broker, listener, mechanism):
    topic = f"kcat-{uuid.uuid4().hex[:8]}"
    lines = [f"{listener}-{i}" for i in range(3)]
    produced = kcat_on(broker, listener, "-P", "-t", topic, mechanism=mechanism, stdin="\n".join(lines) + "\n")
    assert produced.returncode == 0, f"{produced.stderr}\n{broker.tail()}"
    consumed = kcat_on(broker, listener, "-C", "-t", topic, "-o", "beginning", "-e", "-c", "3",
                    mechanism=mechanism)
    assert consumed.returncode == 0, f"{consumed.stderr}\n{broker.tail()}"
    assert consumed.stdout.split() == lines


def test_kcat_with_a_wrong_scram_password_is_refused(broker):
    listed = kcat_on(broker, "SASL_SSL", "-L", "-m", "10", mechanism="SCRAM-SHA-512", password="wrong")
    assert listed.returncode != 0, listed.stdout
    assert "uthentication" in listed.stderr, listed.stderr
