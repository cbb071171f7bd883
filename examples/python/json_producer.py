"""Send a few user-activity events as JSON to the topic 'user-activity'."""

import json
import time

from kafka import KafkaProducer

producer = KafkaProducer(
    bootstrap_servers="localhost:9092",
    # Turn each Python dict into UTF-8 JSON bytes before sending.
    value_serializer=lambda event: json.dumps(event).encode("utf-8"),
)

events = [
    {"user_id": 1, "action": "login"},
    {"user_id": 2, "action": "view_page", "page": "/pricing"},
    {"user_id": 1, "action": "add_to_cart", "item": "notebook"},
    {"user_id": 3, "action": "logout"},
]

for event in events:
    event["timestamp"] = time.time()
    producer.send("user-activity", event)
    print(f"Sent {event}")

producer.flush()
producer.close()
