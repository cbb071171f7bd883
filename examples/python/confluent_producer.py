"""Send a few messages to 'topic_1' with confluent-kafka and report each delivery."""

from confluent_kafka import Producer

producer = Producer({"bootstrap.servers": "localhost:9092"})


def on_delivery(err, msg):
    """Called once per message, from poll() or flush(), when the broker answered."""
    if err is not None:
        print(f"Delivery failed: {err}")
    else:
        print(
            f"Delivered {msg.value().decode('utf-8')!r} to {msg.topic()} "
            f"[{msg.partition()}] at offset {msg.offset()}"
        )


for number in range(5):
    producer.produce("topic_1", value=f"message {number}", callback=on_delivery)
    # Serve delivery callbacks of earlier messages without waiting.
    producer.poll(0)

# Wait until every message is delivered (or has failed).
producer.flush()
