"""Read 'topic_1' with confluent-kafka as part of the group 'example-group'."""

from confluent_kafka import Consumer

consumer = Consumer(
    {
        "bootstrap.servers": "localhost:9092",
        "group.id": "example-group",
        # Where a group with no committed position starts: the oldest message.
        "auto.offset.reset": "earliest",
    }
)
consumer.subscribe(["topic_1"])

print("Reading 'topic_1' (Ctrl+C to stop)")
try:
    while True:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            print(f"Consumer error: {msg.error()}")
            continue
        print(f"Received {msg.value().decode('utf-8')!r} from {msg.topic()} [{msg.partition()}]")
except KeyboardInterrupt:
    pass
finally:
    # Leave the group cleanly and commit the final position.
    consumer.close()
