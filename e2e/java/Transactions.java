// Kafka's Java client in transactions, for the side-by-side transaction tests. Run with Kafka's
// jars on the classpath (source-file mode): java -cp 'jars/*' Transactions.java MODE BOOTSTRAP ...
//
//   produce BOOTSTRAP TOPIC TRANSACTIONAL_ID PATTERN RECORDS_PER_TRANSACTION
//       One transaction per letter of PATTERN ('c' commits it, 'a' aborts it), each of
//       RECORDS_PER_TRANSACTION records "ID-T-R" keyed "R". Prints "COMMITTED value" or
//       "ABORTED value" for each record once its transaction has ended.
//   consume BOOTSTRAP TOPIC ISOLATION_LEVEL until-end|follow
//       Reads every partition of TOPIC from the beginning, without a group, and prints "RECORD
//       partition offset key value" for each record (keys have no spaces in these tests). until-end: up to the end offsets the
//       isolation level gives (ListOffsets; read_committed: the last stable offset), printed
//       first as "END partition offset", then "DONE". follow: until killed, printing "END
//       partition offset" whenever an end offset differs from the last one printed.
//   copy BOOTSTRAP INPUT OUTPUT TRANSACTIONAL_ID GROUP PAUSE_MS
//       Consume-transform-produce: reads INPUT with read_committed from GROUP's committed
//       offsets, and for each poll writes the records to OUTPUT in one transaction that also
//       commits the consumer's offsets (sendOffsetsToTransaction). Prints "OPEN t n" once the n
//       records of transaction t are sent, waits PAUSE_MS, then prints "COMMITTED t n". Runs
//       until killed.
//   open BOOTSTRAP TOPIC TRANSACTIONAL_ID COUNT TIMEOUT_MS [COMMIT_TRIGGER]
//       Begins a transaction (transaction.timeout.ms=TIMEOUT_MS), sends COUNT records
//       "ID-open-R", flushes, prints "OPEN partition offset" for each record's place and
//       "HANGING", then waits. With COMMIT_TRIGGER, once that file exists it tries to commit and
//       prints "COMMITTED" or "COMMIT FAILED exception-class"; without it, it waits until killed.
//
// Every line this program prints for the tests starts with one of those words; the client's
// own logging goes to stderr.

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;
import java.util.stream.Collectors;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class Transactions {
    /// How long `consume` may take to reach the end offsets.
    private static final Duration CONSUME_TIMEOUT = Duration.ofSeconds(30);

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            usage();
        }
        String mode = args[0];
        String bootstrap = args[1];
        switch (mode) {
            case "produce" -> {
                expect(args, 6);
                produce(bootstrap, args[2], args[3], args[4], Integer.parseInt(args[5]));
            }
            case "consume" -> {
                expect(args, 5);
                if (!args[4].equals("until-end") && !args[4].equals("follow")) {
                    usage();
                }
                consume(bootstrap, args[2], args[3], args[4].equals("follow"));
            }
            case "copy" -> {
                expect(args, 7);
                copy(bootstrap, args[2], args[3], args[4], args[5], Long.parseLong(args[6]));
            }
            case "open" -> {
                if (args.length != 6 && args.length != 7) {
                    usage();
                }
                open(bootstrap, args[2], args[3], Integer.parseInt(args[4]), Integer.parseInt(args[5]),
                    args.length == 7 ? Path.of(args[6]) : null);
            }
            default -> usage();
        }
    }

    private static void expect(String[] args, int count) {
        if (args.length != count) {
            usage();
        }
    }

    private static void usage() {
        System.err.println("usage: Transactions produce BOOTSTRAP TOPIC TRANSACTIONAL_ID PATTERN RECORDS_PER_TRANSACTION");
        System.err.println("       Transactions consume BOOTSTRAP TOPIC ISOLATION_LEVEL until-end|follow");
        System.err.println("       Transactions copy BOOTSTRAP INPUT OUTPUT TRANSACTIONAL_ID GROUP PAUSE_MS");
        System.err.println("       Transactions open BOOTSTRAP TOPIC TRANSACTIONAL_ID COUNT TIMEOUT_MS [COMMIT_TRIGGER]");
        System.exit(2);
    }

    private static void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    private static KafkaProducer<String, String> producer(String bootstrap, String transactionalId, Integer timeoutMs) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        if (timeoutMs != null) {
            props.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, timeoutMs);
        }
        return new KafkaProducer<>(props);
    }

    private static KafkaConsumer<String, String> consumer(String bootstrap, String group, String isolation) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        if (group != null) {
            props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 5);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return new KafkaConsumer<>(props);
    }

    private static List<TopicPartition> partitions(KafkaConsumer<?, ?> consumer, String topic) {
        return consumer.partitionsFor(topic).stream()
            .map(p -> new TopicPartition(p.topic(), p.partition()))
            .collect(Collectors.toList());
    }

    private static void produce(String bootstrap, String topic, String transactionalId, String pattern, int perTransaction) {
        try (KafkaProducer<String, String> producer = producer(bootstrap, transactionalId, null)) {
            producer.initTransactions();
            for (int t = 0; t < pattern.length(); t++) {
                char outcome = pattern.charAt(t);
                if (outcome != 'c' && outcome != 'a') {
                    throw new IllegalArgumentException("pattern letters are c (commit) and a (abort): " + pattern);
                }
                List<String> values = new ArrayList<>();
                producer.beginTransaction();
                for (int r = 0; r < perTransaction; r++) {
                    String value = transactionalId + "-" + t + "-" + r;
                    producer.send(new ProducerRecord<>(topic, Integer.toString(r), value));
                    values.add(value);
                }
                if (outcome == 'c') {
                    producer.commitTransaction();
                } else {
                    producer.flush();
                    producer.abortTransaction();
                }
                for (String value : values) {
                    say((outcome == 'c' ? "COMMITTED " : "ABORTED ") + value);
                }
            }
        }
    }

    private static void consume(String bootstrap, String topic, String isolation, boolean follow) {
        try (KafkaConsumer<String, String> consumer = consumer(bootstrap, null, isolation)) {
            List<TopicPartition> partitions = partitions(consumer, topic);
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            Map<TopicPartition, Long> ends = new HashMap<>(consumer.endOffsets(partitions));
            for (TopicPartition partition : partitions) {
                say("END " + partition.partition() + " " + ends.get(partition));
            }
            long deadline = System.nanoTime() + CONSUME_TIMEOUT.toNanos();
            while (follow || partitions.stream().anyMatch(p -> consumer.position(p) < ends.get(p))) {
                if (!follow && System.nanoTime() > deadline) {
                    String at = partitions.stream()
                        .map(p -> p.partition() + "@" + consumer.position(p))
                        .collect(Collectors.joining(" "));
                    System.err.println("not at the end offsets " + ends + " within " + CONSUME_TIMEOUT + ": " + at);
                    System.exit(1);
                }
                for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(100))) {
                    TopicPartition partition = new TopicPartition(record.topic(), record.partition());
                    if (follow || record.offset() < ends.get(partition)) {
                        say("RECORD " + record.partition() + " " + record.offset() + " " + record.key() + " " + record.value());
                    }
                }
                if (follow) {
                    for (Map.Entry<TopicPartition, Long> end : consumer.endOffsets(partitions).entrySet()) {
                        if (!end.getValue().equals(ends.put(end.getKey(), end.getValue()))) {
                            say("END " + end.getKey().partition() + " " + end.getValue());
                        }
                    }
                }
            }
            say("DONE");
        }
    }

    private static void copy(String bootstrap, String input, String output, String transactionalId, String group, long pauseMs)
        throws InterruptedException {
        try (KafkaConsumer<String, String> consumer = consumer(bootstrap, group, "read_committed");
             KafkaProducer<String, String> producer = producer(bootstrap, transactionalId, null)) {
            // Partitions assigned, not subscribed: a restarted copy does not wait for the group to
            // drop the killed member; its offsets still live in GROUP, committed in transactions.
            consumer.assign(partitions(consumer, input));
            producer.initTransactions();
            for (long t = 0; ; ) {
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                if (records.isEmpty()) {
                    continue;
                }
                producer.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (ConsumerRecord<String, String> record : records) {
                    producer.send(new ProducerRecord<>(output, record.key(), record.value()));
                    offsets.put(new TopicPartition(record.topic(), record.partition()),
                        new OffsetAndMetadata(record.offset() + 1));
                }
                producer.flush();
                say("OPEN " + t + " " + records.count());
                Thread.sleep(pauseMs);
                producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                producer.commitTransaction();
                say("COMMITTED " + t + " " + records.count());
                t++;
            }
        }
    }

    private static void open(String bootstrap, String topic, String transactionalId, int count, int timeoutMs, Path trigger)
        throws Exception {
        KafkaProducer<String, String> producer = producer(bootstrap, transactionalId, timeoutMs);
        producer.initTransactions();
        producer.beginTransaction();
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        for (int r = 0; r < count; r++) {
            sent.add(producer.send(new ProducerRecord<>(topic, Integer.toString(r), transactionalId + "-open-" + r)));
        }
        producer.flush();
        for (Future<RecordMetadata> future : sent) {
            RecordMetadata metadata = future.get();
            say("OPEN " + metadata.partition() + " " + metadata.offset());
        }
        say("HANGING");
        if (trigger == null) {
            Thread.sleep(Long.MAX_VALUE);
        }
        while (!Files.exists(trigger)) {
            Thread.sleep(50);
        }
        try {
            producer.commitTransaction();
            say("COMMITTED");
        } catch (Exception e) {
            say("COMMIT FAILED " + e.getClass().getName());
        } finally {
            producer.close(Duration.ofSeconds(5));
        }
    }
}
