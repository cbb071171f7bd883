"""Print every new message on the topic 'test' until you press Ctrl+C.

Without a group_id the consumer keeps no committed position: it starts at the end
of the topic, so start it before hello_producer.py.
"""

from kafka import KafkaConsumer

consumer = KafkaConsumer("test", bootstrap_servers="localhost:9092")

print("Waiting for messages on 'test' (Ctrl+C to stop)")
for message in consumer:
    print(message.value.decode("utf-8"))
