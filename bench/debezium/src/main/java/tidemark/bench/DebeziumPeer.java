/*
 * DebeziumPeer: the Debezium side of tidemark's capture benchmark.
 *
 * What it measures: how long Debezium's embedded engine with its MariaDB connector takes to
 * stream N row changes of one table out of the binlog and hand them to a consumer, counted
 * from just before the engine is started (so the figure includes loading the connector,
 * connecting, reading the schema history and opening the binlog, as tidemark's figure includes
 * connecting) to the moment the N-th change record of the table reaches the consumer.
 *
 * How: two runs of the engine on the same state directory (offsets and schema history in
 * files).
 *   prime  starts from empty state with snapshot.mode=no_data: the connector records the
 *          table's schema and the binlog position of now, without reading any row. Heartbeats
 *          every 100 ms make the engine commit that position to the offset file with no data
 *          change; prime waits until the offset file holds a binlog position (file and pos) of
 *          the streaming phase, then stops the engine.
 *   drain  restarts the engine on a copy of that state, so it resumes from the primed
 *          position and reads the rows written since (the primed files are left as they were:
 *          the same load can be drained again). The consumer only counts records of the table's data-change
 *          topic whose value is not null (heartbeats, schema changes and tombstones are
 *          skipped). At the N-th it takes the time, stops the engine and prints one line on
 *          stdout:  rows=N seconds=S
 *
 * Change-event format: DebeziumEngine.create(ChangeEventFormat.of(Connect.class)) hands the
 * consumer Kafka Connect SourceRecords as the connector produced them (every column already
 * decoded into a Struct, the before/after/source envelope built). No converter runs, so no
 * JSON or Avro serialisation cost is added: that is what a Kafka Connect worker would spend
 * before its producer, not part of Debezium's capture. The consumer touches each record only
 * through topic() and value() != null.
 *
 * Everything but the result line goes to stderr: System.out is pointed at stderr for the
 * whole run, and the result is printed through the saved original stdout.
 */
package tidemark.bench;

import io.debezium.embedded.Connect;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.engine.format.ChangeEventFormat;
import org.apache.kafka.connect.source.SourceRecord;

import java.io.IOException;
import java.io.InputStream;
import java.io.ObjectInputStream;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;

public final class DebeziumPeer {
    private static final String TOPIC_PREFIX = "peer";
    private static final String USAGE = String.join("\n",
            "usage: DebeziumPeer prime|drain --port P --database DB --table T --server-id N --state DIR",
            "                    [--host H (127.0.0.1)] [--user U (root)] [--password PW ('')]",
            "                    [--rows N (drain: required)] [--timeout SECONDS (1800)]");

    /** The real stdout: only the result line is written to it. */
    private static PrintStream resultOut;

    private DebeziumPeer() {
    }

    public static void main(String[] args) {
        resultOut = System.out;
        System.setOut(System.err);
        quietJavaUtilLogging();
        int rc;
        try {
            rc = run(Options.parse(args));
        } catch (UsageException e) {
            System.err.println("debezium-peer: " + e.getMessage());
            System.err.println(USAGE);
            rc = 2;
        } catch (IllegalStateException e) {
            // The peer's own checks (timeout, engine stopped, state missing): the message says it.
            System.err.println("debezium-peer: error: " + e.getMessage());
            rc = 1;
        } catch (Throwable e) {
            System.err.println("debezium-peer: error: " + e);
            e.printStackTrace(System.err);
            rc = 1;
        }
        System.err.flush();
        resultOut.flush();
        // Halt rather than wait for any thread the engine or a driver may have left behind.
        Runtime.getRuntime().halt(rc);
    }

    private static int run(Options o) throws Exception {
        Path state = Path.of(o.state).toAbsolutePath();
        Path offsets = state.resolve("offsets.dat");
        Path history = state.resolve("schema-history.dat");
        switch (o.mode) {
            case "prime":
                return prime(o, state, offsets, history);
            case "drain":
                return drainOnCopy(o, state, offsets, history);
            default:
                throw new UsageException("unknown mode " + o.mode);
        }
    }

    /**
     * The binlog client (mysql-binlog-connector-java) logs through java.util.logging, whose
     * console handler writes to stderr; hold it to the level asked of slf4j-simple (warn by
     * default) so that it does not chatter at INFO.
     */
    private static void quietJavaUtilLogging() {
        String level = System.getProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        java.util.logging.Level jul;
        switch (level.toLowerCase(java.util.Locale.ROOT)) {
            case "trace": jul = java.util.logging.Level.FINEST; break;
            case "debug": jul = java.util.logging.Level.FINE; break;
            case "info": jul = java.util.logging.Level.INFO; break;
            case "error": jul = java.util.logging.Level.SEVERE; break;
            default: jul = java.util.logging.Level.WARNING; break;
        }
        java.util.logging.Logger root = java.util.logging.Logger.getLogger("");
        root.setLevel(jul);
        for (java.util.logging.Handler h : root.getHandlers()) {
            h.setLevel(jul);
        }
    }

    // --- prime -------------------------------------------------------------------------------

    private static int prime(Options o, Path state, Path offsets, Path history) throws Exception {
        Files.createDirectories(state);
        Files.deleteIfExists(offsets);
        Files.deleteIfExists(history);
        Properties props = baseProperties(o, offsets, history);
        // Commit after every batch, and make batches without data changes: a heartbeat record
        // carries the current binlog position, so it reaches the offset file within ~100 ms
        // once streaming runs.
        props.setProperty("offset.flush.interval.ms", "0");
        props.setProperty("heartbeat.interval.ms", "100");

        Run r = new Run();
        DebeziumEngine<RecordChangeEvent<SourceRecord>> engine = build(props, r, rec -> { });
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(o.timeoutSeconds);
        log("prime: starting the engine (snapshot.mode=no_data) on " + o.host + ":" + o.port);
        ExecutorService executor = start(engine);
        String position = null;
        while (position == null) {
            if (r.finished.await(100, TimeUnit.MILLISECONDS)) {
                throw new IllegalStateException("the engine stopped before an offset was stored: "
                        + r.describeEnd());
            }
            if (System.nanoTime() > deadline) {
                stop(engine, executor);
                throw new IllegalStateException("timed out after " + o.timeoutSeconds
                        + " s waiting for a streaming offset in " + offsets);
            }
            position = streamingPosition(offsets);
        }
        log("prime: offset stored: " + position);
        stop(engine, executor);
        if (r.failed()) {
            throw new IllegalStateException("the engine failed while stopping: " + r.describeEnd());
        }
        // Read again after the stop: the last commit must still be a binlog position.
        String last = streamingPosition(offsets);
        if (last == null) {
            throw new IllegalStateException("after the stop, " + offsets + " holds no binlog position");
        }
        log("prime: done; state in " + state + "; offset " + last);
        return 0;
    }

    /**
     * The offset stored in Kafka Connect's FileOffsetBackingStore file (a serialized
     * HashMap of key bytes to value bytes, both JSON from the JsonConverter), when it is a
     * binlog position of the streaming phase (has "file" and "pos" and no "snapshot" key at
     * all); otherwise null. Debezium 3.5 marks the offsets of its snapshot phase with
     * "snapshot":"INITIAL" (older versions with true): a drain resumed from such an offset runs
     * the snapshot again, takes the binlog position of that moment (after the load) and never
     * sees the load's rows. That offset is committed now and then before the first heartbeat,
     * so it must not end the prime.
     */
    private static String streamingPosition(Path offsets) {
        if (!Files.isRegularFile(offsets)) {
            return null;
        }
        Map<?, ?> raw;
        try (InputStream in = Files.newInputStream(offsets); ObjectInputStream ois = new ObjectInputStream(in)) {
            raw = (Map<?, ?>) ois.readObject();
        } catch (IOException | ClassNotFoundException | ClassCastException e) {
            return null; // being written, or empty: look again later
        }
        for (Map.Entry<?, ?> e : raw.entrySet()) {
            String value = text(e.getValue());
            if (value != null && value.contains("\"file\"") && value.contains("\"pos\"")
                    && !value.contains("\"snapshot\"")) {
                return value;
            }
        }
        return null;
    }

    private static String text(Object o) {
        if (o instanceof byte[]) {
            return new String((byte[]) o, StandardCharsets.UTF_8);
        }
        if (o instanceof ByteBuffer) {
            ByteBuffer b = ((ByteBuffer) o).duplicate();
            byte[] bytes = new byte[b.remaining()];
            b.get(bytes);
            return new String(bytes, StandardCharsets.UTF_8);
        }
        return null;
    }

    // --- drain -------------------------------------------------------------------------------

    /**
     * The engine commits its offsets when it stops, so a drain on the primed files would move
     * them past the rows it read. It runs on copies instead (in a directory under DIR, removed
     * afterwards): the primed state stays as prime left it, and the same load can be drained
     * again (one prime and one load for several timed runs).
     */
    private static int drainOnCopy(Options o, Path state, Path offsets, Path history) throws Exception {
        if (o.rows <= 0) {
            throw new UsageException("drain needs --rows N (N > 0)");
        }
        if (streamingPosition(offsets) == null) {
            throw new IllegalStateException(offsets + " holds no binlog position: run prime first");
        }
        if (!Files.isRegularFile(history)) {
            throw new IllegalStateException("no schema history at " + history + ": run prime first");
        }
        Path work = Files.createTempDirectory(state, "drain-");
        // Also when the run is killed (SIGTERM, SIGINT): the hook removes the copy then.
        Thread cleanup = new Thread(() -> removeCopy(work), "remove-drain-copy");
        Runtime.getRuntime().addShutdownHook(cleanup);
        try {
            Path offsetsCopy = work.resolve(offsets.getFileName());
            Path historyCopy = work.resolve(history.getFileName());
            Files.copy(offsets, offsetsCopy);
            Files.copy(history, historyCopy);
            return drain(o, offsetsCopy, historyCopy);
        } finally {
            removeCopy(work);
        }
    }

    private static void removeCopy(Path work) {
        try {
            if (Files.isDirectory(work)) {
                try (var files = Files.list(work)) {
                    for (Path f : (Iterable<Path>) files::iterator) {
                        Files.deleteIfExists(f);
                    }
                }
                Files.deleteIfExists(work);
            }
        } catch (IOException e) {
            log("could not remove " + work + ": " + e);
        }
    }

    private static int drain(Options o, Path offsets, Path history) throws Exception {
        log("drain: resuming from " + streamingPosition(offsets));
        Properties props = baseProperties(o, offsets, history);
        // Debezium's defaults for a run: offsets flushed every 60 s, no heartbeats.

        final String dataTopic = TOPIC_PREFIX + "." + o.database + "." + o.table;
        final long target = o.rows;
        final AtomicLong counted = new AtomicLong();
        final AtomicLong doneAt = new AtomicLong();
        final CountDownLatch reached = new CountDownLatch(1);
        Consumer<RecordChangeEvent<SourceRecord>> consumer = event -> {
            SourceRecord rec = event.record();
            // Data changes of DB.T are on the topic prefix.DB.T; a delete's tombstone has a
            // null value. Heartbeats and schema changes have topics of their own.
            if (rec.value() != null && dataTopic.equals(rec.topic())) {
                long n = counted.incrementAndGet();
                if (n == target) {
                    doneAt.set(System.nanoTime());
                    reached.countDown();
                }
                if (n == 1) {
                    // Once, to show on stderr that the rows arrive decoded (not part of the count's cost).
                    String v = String.valueOf(rec.value());
                    log("drain: first record: " + (v.length() > 1500 ? v.substring(0, 1500) + "..." : v));
                }
            }
        };

        Run r = new Run();
        DebeziumEngine<RecordChangeEvent<SourceRecord>> engine = build(props, r, consumer);
        long started = System.nanoTime();
        ExecutorService executor = start(engine);
        long deadline = started + TimeUnit.SECONDS.toNanos(o.timeoutSeconds);
        long nextReport = started + TimeUnit.SECONDS.toNanos(10);
        while (!reached.await(200, TimeUnit.MILLISECONDS)) {
            long now = System.nanoTime();
            if (r.finished.getCount() == 0 && reached.getCount() != 0) {
                throw new IllegalStateException("the engine stopped after " + counted.get() + " of "
                        + target + " records: " + r.describeEnd());
            }
            if (now > deadline) {
                stop(engine, executor);
                throw new IllegalStateException("timed out after " + o.timeoutSeconds + " s with "
                        + counted.get() + " of " + target + " records of " + dataTopic);
            }
            if (now > nextReport) {
                log(String.format("drain: %d of %d records after %.1f s", counted.get(), target,
                        (now - started) / 1e9));
                nextReport = now + TimeUnit.SECONDS.toNanos(10);
            }
        }
        double seconds = (doneAt.get() - started) / 1e9;
        log(String.format("drain: %d records in %.3f s; stopping the engine", target, seconds));
        stop(engine, executor);
        if (counted.get() != target) {
            log("drain: note: " + counted.get() + " records counted by the stop (more than asked)");
        }
        resultOut.printf("rows=%d seconds=%.3f%n", target, seconds);
        resultOut.flush();
        return 0;
    }

    // --- the engine --------------------------------------------------------------------------

    private static Properties baseProperties(Options o, Path offsets, Path history) {
        Properties p = new Properties();
        p.setProperty("name", "tidemark-bench-debezium");
        p.setProperty("connector.class", "io.debezium.connector.mariadb.MariaDbConnector");
        p.setProperty("offset.storage", "org.apache.kafka.connect.storage.FileOffsetBackingStore");
        p.setProperty("offset.storage.file.filename", offsets.toString());
        p.setProperty("schema.history.internal", "io.debezium.storage.file.history.FileSchemaHistory");
        p.setProperty("schema.history.internal.file.filename", history.toString());
        p.setProperty("database.hostname", o.host);
        p.setProperty("database.port", Integer.toString(o.port));
        p.setProperty("database.user", o.user);
        p.setProperty("database.password", o.password);
        p.setProperty("database.server.id", Long.toString(o.serverId));
        // The dev server has no TLS; tidemark connects in plain TCP too.
        p.setProperty("database.ssl.mode", "disable");
        p.setProperty("topic.prefix", TOPIC_PREFIX);
        p.setProperty("database.include.list", o.database);
        p.setProperty("table.include.list", o.database + "." + o.table);
        p.setProperty("snapshot.mode", "no_data");
        return p;
    }

    private static DebeziumEngine<RecordChangeEvent<SourceRecord>> build(Properties props, Run r,
            Consumer<RecordChangeEvent<SourceRecord>> consumer) {
        return DebeziumEngine.create(ChangeEventFormat.of(Connect.class))
                .using(props)
                .using((success, message, error) -> r.end(success, message, error))
                .notifying(consumer)
                .build();
    }

    private static ExecutorService start(DebeziumEngine<?> engine) {
        ExecutorService executor = Executors.newSingleThreadExecutor(task -> {
            Thread t = new Thread(task, "debezium-engine");
            t.setDaemon(true);
            return t;
        });
        executor.execute(engine);
        return executor;
    }

    private static void stop(DebeziumEngine<?> engine, ExecutorService executor) {
        try {
            engine.close();
        } catch (IOException | RuntimeException e) {
            log("closing the engine failed: " + e);
        }
        executor.shutdown();
        try {
            if (!executor.awaitTermination(60, TimeUnit.SECONDS)) {
                log("the engine did not stop within 60 s");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** How the engine ended, from its completion callback. */
    private static final class Run {
        final CountDownLatch finished = new CountDownLatch(1);
        final AtomicReference<String> end = new AtomicReference<>();
        volatile boolean success = true;

        void end(boolean ok, String message, Throwable error) {
            success = ok;
            end.set((ok ? "" : "failed: ") + message + (error == null ? "" : " (" + rootCause(error) + ")"));
            if (!ok) {
                log("engine " + end.get());
                if (error != null) {
                    error.printStackTrace(System.err);
                }
            }
            finished.countDown();
        }

        boolean failed() {
            return finished.getCount() == 0 && !success;
        }

        String describeEnd() {
            String e = end.get();
            return e == null ? "(no completion message)" : e;
        }
    }

    private static String rootCause(Throwable t) {
        Throwable c = t;
        while (c.getCause() != null && c.getCause() != c) {
            c = c.getCause();
        }
        return c == t ? t.toString() : t + "; cause: " + c;
    }

    private static void log(String message) {
        System.err.println("debezium-peer: " + message);
        System.err.flush();
    }

    // --- arguments ---------------------------------------------------------------------------

    private static final class UsageException extends Exception {
        UsageException(String message) {
            super(message);
        }
    }

    private static final class Options {
        String mode;
        String host = "127.0.0.1";
        int port = -1;
        String user = "root";
        String password = "";
        String database;
        String table;
        long serverId = -1;
        String state;
        long rows = -1;
        long timeoutSeconds = 1800;

        static Options parse(String[] args) throws UsageException {
            if (args.length == 0) {
                throw new UsageException("no mode given");
            }
            Options o = new Options();
            o.mode = args[0];
            if (!o.mode.equals("prime") && !o.mode.equals("drain")) {
                throw new UsageException("unknown mode " + o.mode);
            }
            Map<String, String> values = new HashMap<>();
            for (int i = 1; i < args.length; i++) {
                String a = args[i];
                if (!a.startsWith("--")) {
                    throw new UsageException("unexpected argument " + a);
                }
                String key = a;
                String value;
                int eq = a.indexOf('=');
                if (eq > 0) {
                    key = a.substring(0, eq);
                    value = a.substring(eq + 1);
                } else if (i + 1 < args.length) {
                    value = args[++i];
                } else {
                    throw new UsageException(a + " needs a value");
                }
                values.put(key, value);
            }
            for (Map.Entry<String, String> e : values.entrySet()) {
                String v = e.getValue();
                switch (e.getKey()) {
                    case "--host": o.host = v; break;
                    case "--port": o.port = (int) number(e.getKey(), v); break;
                    case "--user": o.user = v; break;
                    case "--password": o.password = v; break;
                    case "--database": o.database = v; break;
                    case "--table": o.table = v; break;
                    case "--server-id": o.serverId = number(e.getKey(), v); break;
                    case "--state": o.state = v; break;
                    case "--rows": o.rows = number(e.getKey(), v); break;
                    case "--timeout": o.timeoutSeconds = number(e.getKey(), v); break;
                    default: throw new UsageException("unknown option " + e.getKey());
                }
            }
            if (o.port <= 0 || o.database == null || o.table == null || o.serverId <= 0 || o.state == null) {
                throw new UsageException("--port, --database, --table, --server-id and --state are required");
            }
            if (o.timeoutSeconds <= 0) {
                throw new UsageException("--timeout must be positive");
            }
            return o;
        }

        private static long number(String key, String v) throws UsageException {
            try {
                return Long.parseLong(v);
            } catch (NumberFormatException e) {
                throw new UsageException(key + " wants a number, not " + v);
            }
        }
    }
}
