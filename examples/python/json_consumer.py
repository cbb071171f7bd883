"""Read the JSON events on 'user-activity' as part of the group 'activity-readers'.

The group remembers how far it has read, so a second run only shows new events;
auto_offset_reset='earliest' makes the very first run start at the oldest event.
"""

import json

from kafka import KafkaConsumer

consumer = KafkaConsumer(
    "user-activity",
    bootstrap_servers="localhost:9092",
    group_id="activity-readers",
    auto_offset_reset="earliest",
    value_deserializer=lambda raw: json.loads(raw.decode("utf-8")),
)

print("Reading 'user-activity' (Ctrl+C to stop)")
for message in consumer:
    event = message.value
    print(f"user {event['user_id']}: {event['action']}  {event}")
