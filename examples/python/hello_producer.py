"""Send one message, b'Hello world', to the topic 'test' with kafka-python."""

from kafka import KafkaProducer

producer = KafkaProducer(bootstrap_servers="localhost:9092")

# send() only queues the message; flush() waits until the broker has it.
producer.send("test", b"Hello world")
producer.flush()
producer.close()

print("Sent 'Hello world' to topic 'test'")
