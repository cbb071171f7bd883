"""A confluent-kafka (librdkafka) transactional application, run by the side-by-side test
`confluent_kafka_transactions` in e2e/tests/kafka_apps.rs against Oxbow and against Apache
Kafka: commit and abort, what read_committed and read_uncommitted consumers see, and a
consume-transform-produce loop whose input offsets go into its transactions with
send_offsets_to_transaction.

Usage: transactions_app.py BOOTSTRAP. Prints one `PASS <check>` line per check and exits 0,
or prints the failure and exits 1. Every wait has a deadline.
"""

import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT = 30.0


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def create_topics(bootstrap, names, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names],
        operation_timeout=TIMEOUT,
    )
    for future in futures.values():
        future.result(timeout=TIMEOUT)


def transactional_producer(bootstrap, transactional_id):
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 60000,
            "linger.ms": 5,
        }
    )
    producer.init_transactions(TIMEOUT)
    return producer


def consumer(bootstrap, group, isolation):
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )


def read_to_end(bootstrap, topic, partitions, isolation):
    """Every value of `topic` from the beginning to the end an `isolation` reader sees (for
    read_committed, the last stable offset), in partition order."""
    reader = consumer(bootstrap, f"reader-{uuid.uuid4()}", isolation)
    reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values = {p: [] for p in range(partitions)}
    at_end = set()
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(at_end) < partitions:
            check(time.monotonic() < deadline, f"{topic}: no end of partitions {sorted(set(range(partitions)) - at_end)} in {TIMEOUT}s")
            message = reader.poll(0.2)
            if message is None:
                continue
            if message.error():
                if message.error().code() == -191:  # _PARTITION_EOF
                    at_end.add(message.partition())
                    continue
                raise KafkaException(message.error())
            values[message.partition()].append(message.value().decode())
    finally:
        reader.close()
    return [v for p in range(partitions) for v in values[p]]


def produce(producer, topic, values):
    for value in values:
        producer.produce(topic, key=value.encode(), value=value.encode())
    check(producer.flush(TIMEOUT) == 0, "records still queued after flush")


def commit_and_abort(bootstrap):
    """A committed transaction is read by both isolation levels, an aborted one only by
    read_uncommitted; the delivery callback reports each record of both."""
    topic = "py-txn"
    create_topics(bootstrap, [topic], 2)
    producer = transactional_producer(bootstrap, "py-txn-producer")
    delivered = []

    def on_delivery(err, message):
        if err is None:
            delivered.append(message.value().decode())

    producer.begin_transaction()
    for i in range(6):
        producer.produce(topic, key=f"c{i}".encode(), value=f"committed-{i}".encode(), on_delivery=on_delivery)
    producer.commit_transaction(TIMEOUT)
    producer.begin_transaction()
    produce(producer, topic, [f"aborted-{i}" for i in range(4)])
    producer.abort_transaction(TIMEOUT)
    producer.begin_transaction()
    produce(producer, topic, [f"later-{i}" for i in range(2)])
    producer.commit_transaction(TIMEOUT)
    check(sorted(delivered) == [f"committed-{i}" for i in range(6)], f"delivery callbacks: {delivered}")

    committed = read_to_end(bootstrap, topic, 2, "read_committed")
    want = [f"committed-{i}" for i in range(6)] + [f"later-{i}" for i in range(2)]
    check(sorted(committed) == sorted(want), f"read_committed read {committed}")
    everything = read_to_end(bootstrap, topic, 2, "read_uncommitted")
    check(
        sorted(everything) == sorted(want + [f"aborted-{i}" for i in range(4)]),
        f"read_uncommitted read {everything}",
    )
    print("PASS commit and abort: read_committed reads 8 committed records, read_uncommitted all 12")


def copy_with_offsets_in_transactions(bootstrap):
    """A consume-transform-produce loop: the input's offsets commit with the output, and an
    aborted transaction's offsets are dropped with its records."""
    source, sink, group = "py-input", "py-output", "py-copier"
    create_topics(bootstrap, [source, sink], 1)
    plain = Producer({"bootstrap.servers": bootstrap})
    produce(plain, source, [f"in-{i}" for i in range(10)])

    reader = consumer(bootstrap, group, "read_committed")
    reader.subscribe([source])
    producer = transactional_producer(bootstrap, "py-copier-1")
    copied = 0
    deadline = time.monotonic() + TIMEOUT
    producer.begin_transaction()
    while copied < 10:
        check(time.monotonic() < deadline, f"copied {copied} of 10 records in {TIMEOUT}s")
        message = reader.poll(0.2)
        if message is None or message.error():
            continue
        producer.produce(sink, key=message.key(), value=message.value().upper())
        copied += 1
    producer.send_offsets_to_transaction(
        reader.position(reader.assignment()), reader.consumer_group_metadata(), TIMEOUT
    )
    producer.commit_transaction(TIMEOUT)
    offsets = reader.committed([TopicPartition(source, 0)], timeout=TIMEOUT)
    check(offsets[0].offset == 10, f"after the commit the group's offset is {offsets[0].offset}")

    producer.begin_transaction()
    produce(producer, sink, ["never"])
    producer.send_offsets_to_transaction(
        [TopicPartition(source, 0, 3)], reader.consumer_group_metadata(), TIMEOUT
    )
    producer.abort_transaction(TIMEOUT)
    offsets = reader.committed([TopicPartition(source, 0)], timeout=TIMEOUT)
    check(offsets[0].offset == 10, f"after the abort the group's offset is {offsets[0].offset}")
    reader.close()

    output = read_to_end(bootstrap, sink, 1, "read_committed")
    check(output == [f"IN-{i}" for i in range(10)], f"read_committed output: {output}")
    print("PASS send_offsets_to_transaction: offset 10 committed with the output, the aborted offset 3 dropped")


def main():
    bootstrap = sys.argv[1]
    try:
        commit_and_abort(bootstrap)
        copy_with_offsets_in_transactions(bootstrap)
    except (CheckFailed, KafkaException) as failure:
        print(f"FAIL {failure}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
