"""ACLs over SASL_SSL with SCRAM users, with real clients (confluent-kafka and kcat).

One broker serves the module with the authorizer on and `super.users=User:admin`. `alice`
authenticates with SCRAM too but has no ACL: a topic is denied to her (produce fails with
TOPIC_AUTHORIZATION_FAILED and Metadata hides it), allowed once admin creates ACLs with
confluent-kafka's AdminClient, and denied again once they are deleted. The broker and its
certificates (a throwaway CA made with openssl) come from secure_broker.py. Every wait is bounded.
"""

import uuid

import pytest
from confluent_kafka import KafkaError, Producer
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

from secure_broker import CLIENT_TIMEOUT, SecureBroker, consume, kcat, serve

MECHANISM = "SCRAM-SHA-512"
PASSWORDS = {"admin": "admin-secret", "alice": "alice-secret"}


class AuthorizingBroker(SecureBroker):
    """A broker with one SASL_SSL listener, SCRAM users admin and alice, and ACLs enforced."""

    def __init__(self, workdir):
        super().__init__(
            workdir,
            listeners=("SASL_SSL",),
            properties=[
                f"sasl.enabled.mechanisms={MECHANISM}",
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users=User:admin",
            ],
            args=[arg for user, password in PASSWORDS.items()
                  for arg in ("--add-scram", f"{MECHANISM}=[name={user},password={password}]")],
        )

    def settings(self, user):
        return self.client_settings("SASL_SSL", MECHANISM, user, PASSWORDS[user])

    def kcat(self, user, *args, stdin=None):
        return kcat(self.settings(user), *args, stdin=stdin)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    yield from serve(AuthorizingBroker(tmp_path_factory.mktemp("acl-broker")))


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
    read = consume(broker.settings("alice"), topic, group, 2, commit=True, explain=broker.tail)
    assert read == ["one", "two"]

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
