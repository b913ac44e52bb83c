import bitronix.tm.BitronixTransactionManager;
import bitronix.tm.Configuration;
import bitronix.tm.TransactionManagerServices;
import bitronix.tm.resource.jdbc.PoolingDataSource;
import io.imago.xa.ImagoXAResource;
import io.imago.xa.ImagoXid;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import javax.sql.DataSource;
import javax.transaction.RollbackException;
import javax.transaction.Status;
import javax.transaction.Transaction;
import javax.transaction.TransactionManager;
import javax.transaction.UserTransaction;
import javax.transaction.xa.XAException;
import javax.transaction.xa.XAResource;
import javax.transaction.xa.Xid;

/**
 * The JTA scenarios clients/java/jta_test.go runs under Bitronix, over PostgreSQL (Bitronix's
 * own PoolingDataSource of PgJDBC's PGXADataSource) and Imago (one ImagoXAResource, registered
 * with examples/java-xa/jta/ImagoXAResourceProducer).
 *
 * <p>Two halves. {@link #boot} is the deployment: Bitronix's configuration and the resource
 * registrations, as an application server or a main() does it once. Everything after it is
 * application code and uses only JTA ({@link UserTransaction}, {@link TransactionManager} for
 * suspend/resume), JDBC and Imago's public client API: no Xid, nothing of Bitronix.
 *
 * <p>Each transaction writes a row (id = its key) into the table and publishes a message with the
 * same key; the Go test then checks, for every key, how many rows and messages exist. Modes:
 * <ul>
 *   <li>{@code scenarios}: commit, rollback, timeout, suspend/resume (TMJOIN), publishing with
 *       no transaction (XAER_PROTO, no request sent), and two threads with two transactions on
 *       the one resource;
 *   <li>{@code crash}: one transaction whose commit halts the JVM right after Bitronix's journal
 *       recorded the commit decision (HaltingJournal), exit status 77;
 *   <li>{@code recover}: a new JVM with the same journal and server id: Bitronix's start-up
 *       recovery finishes the halted transaction.
 * </ul>
 * Output: "ok NAME" per passed check, "FAIL NAME: why" per failed one; exit 1 when any failed.
 */
public final class JtaScenarios {
    private static final List<String> failures = new ArrayList<>();
    private static BufferedReader driver;

    public static void main(String[] args) throws Exception {
        Map<String, String> o = new LinkedHashMap<>();
        for (String k : List.of("--mode", "--imago", "--jdbc", "--server-id", "--journal-dir", "--topic", "--table", "--run")) {
            o.put(k, null);
        }
        for (int i = 0; i + 1 < args.length; i += 2) {
            if (!o.containsKey(args[i])) {
                throw new IllegalArgumentException("unknown option " + args[i]);
            }
            o.put(args[i], args[i + 1]);
        }
        for (Map.Entry<String, String> e : o.entrySet()) {
            if (e.getValue() == null) {
                throw new IllegalArgumentException("missing " + e.getKey());
            }
        }
        driver = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String mode = o.get("--mode");
        Deployment d = boot(o, mode.equals("crash"));
        App app = new App(d.tm, d.tm, d.db, d.imago, o.get("--table"), o.get("--topic"));
        String run = o.get("--run");
        try {
            switch (mode) {
                case "scenarios" -> scenarios(app, d, run);
                case "crash" -> {
                    HaltingJournal.arm();
                    app.record(run + "-crash", true);
                    fail("crash", "commit returned: the journal did not halt the JVM");
                }
                case "recover" -> {
                    // The manager's start-up recovery ran in boot(): report what it did.
                    var r = TransactionManagerServices.getRecoverer();
                    System.out.println("recovery: committed " + r.getCommittedCount() + ", rolled back "
                            + r.getRolledbackCount() + ", error " + r.getCompletionException());
                    check("recover", r.getCompletionException() == null && r.getCommittedCount() >= 1,
                            "the start-up recovery committed nothing or failed");
                }
                default -> throw new IllegalArgumentException("unknown mode " + mode);
            }
        } finally {
            d.close();
        }
        System.out.println(failures.isEmpty() ? "jta: PASS" : "jta: FAIL " + failures);
        System.exit(failures.isEmpty() ? 0 : 1);
    }

    // ---------------------------------------------------------------------------------------
    // The deployment: Bitronix and the two resources.

    record Deployment(BitronixTransactionManager tm, PoolingDataSource db, ImagoXAResource imago,
            ImagoXAResourceProducer producer) {
        void close() {
            tm.shutdown(); // also closes the registered resources
        }
    }

    static Deployment boot(Map<String, String> o, boolean halting) {
        Configuration c = TransactionManagerServices.getConfiguration();
        c.setServerId(o.get("--server-id"));
        c.setLogPart1Filename(Path.of(o.get("--journal-dir"), "btm1.tlog").toString());
        c.setLogPart2Filename(Path.of(o.get("--journal-dir"), "btm2.tlog").toString());
        c.setDisableJmx(true);
        c.setDefaultTransactionTimeout(30);
        c.setBackgroundRecoveryIntervalSeconds(3600); // only the start-up recovery, in this run
        c.setGracefulShutdownInterval(5);
        if (halting) {
            c.setJournal(HaltingJournal.class.getName());
        }

        // The resources first: the manager's start-up recovery scans every registered one.
        PoolingDataSource db = new PoolingDataSource();
        db.setUniqueName("pg");
        db.setClassName("org.postgresql.xa.PGXADataSource");
        db.setMaxPoolSize(4);
        db.setAllowLocalTransactions(true);
        db.getDriverProperties().setProperty("url", o.get("--jdbc"));
        db.init();

        ImagoXAResource imago = ImagoXAResource.builder(o.get("--imago"))
                .enlister(ImagoXAResourceProducer.enlister(TransactionManagerServices::getTransactionManager))
                .build();
        ImagoXAResourceProducer producer = ImagoXAResourceProducer.register("imago", imago);

        BitronixTransactionManager tm = TransactionManagerServices.getTransactionManager();
        return new Deployment(tm, db, imago, producer);
    }

    // ---------------------------------------------------------------------------------------
    // The application: JTA, JDBC and Imago's client API only.

    /** What a payment service holds: the transaction API, a DataSource, the broker's resource. */
    record App(UserTransaction ut, TransactionManager tm, DataSource db, ImagoXAResource imago, String table, String topic) {
        /** One transaction: a row and a message under the same key, then commit or roll back. */
        void record(String key, boolean commit) throws Exception {
            ut.begin();
            try {
                insert(key);
                imago.publishJson(topic, key, "{\"key\":\"" + key + "\"}");
            } catch (Exception | Error e) {
                ut.rollback();
                throw e;
            }
            if (commit) {
                ut.commit();
            } else {
                ut.rollback();
            }
        }

        void insert(String key) throws SQLException {
            try (Connection c = db.getConnection();
                    PreparedStatement s = c.prepareStatement("INSERT INTO " + table + " (id) VALUES (?)")) {
                s.setString(1, key);
                s.executeUpdate();
            }
        }
    }

    static void scenarios(App app, Deployment d, String run) throws Exception {
        // 1. commit: the row and the message, once each.
        app.record(run + "-commit", true);
        System.out.println("ok commit");

        // 2. rollback: neither.
        app.record(run + "-rollback", false);
        System.out.println("ok rollback");

        // 3. No transaction on this thread: XAER_PROTO, and no request leaves the client.
        long before = requests();
        expectProto("publish with no transaction (enlisting resource)",
                () -> app.imago().publishJson(app.topic(), run + "-notx", "{}"));
        ImagoXAResource plain = ImagoXAResource.builder(d.imago().baseUrl()).build();
        expectProto("publish with no branch (plain resource)",
                () -> plain.publish(app.topic(), run + "-notx", new byte[] {1}));
        check("no request sent without a branch", requests() == before,
                "the broker saw " + (requests() - before) + " request(s)");

        // 4. Suspend and resume: Bitronix ends the branch (TMSUCCESS) on suspend and joins it
        //    again (TMJOIN) on resume; in between the thread has no transaction.
        app.ut().begin();
        app.insert(run + "-joined-1");
        app.imago().publishJson(app.topic(), run + "-joined-1", "{}");
        Transaction tx = app.tm().suspend();
        expectProto("publish while the transaction is suspended",
                () -> app.imago().publishJson(app.topic(), run + "-suspended", "{}"));
        app.tm().resume(tx);
        app.imago().publishJson(app.topic(), run + "-joined-2", "{}");
        app.ut().commit();
        System.out.println("ok suspend, resume (TMJOIN), commit");

        // 5. Timeout: the transaction outlives its 1 s; commit rolls back both branches.
        app.ut().setTransactionTimeout(1);
        app.ut().begin();
        app.ut().setTransactionTimeout(0);
        app.insert(run + "-timeout");
        app.imago().publishJson(app.topic(), run + "-timeout", "{}");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (app.ut().getStatus() != Status.STATUS_MARKED_ROLLBACK && System.nanoTime() < deadline) {
            Thread.sleep(20); // waiting on the manager's timer; no event to wait on in JTA
        }
        try {
            app.ut().commit();
            fail("timeout", "commit of a timed-out transaction succeeded");
        } catch (RollbackException e) {
            System.out.println("ok timeout: " + e.getMessage());
        }

        // 6. Two threads, two transactions, one resource object, publishing in turns.
        twoThreads(app, run);

        // 7. The association rules with no manager (the raw XAResource way).
        rawAssociation(d.imago().baseUrl(), app.topic(), run);
    }

    /**
     * The association rules driven by hand, without a manager (so with xids: this is the raw
     * XAResource way, not application code). One branch, moved between threads by
     * suspend/resume and end/join, takes -raw-1..3 and commits; a branch ended from another
     * thread leaves its first thread without association.
     */
    static void rawAssociation(String url, String topic, String run) throws Exception {
        ImagoXAResource r = ImagoXAResource.builder(url).build();
        Xid x = ImagoXid.of(0x494d47, run + "-raw", "b");
        Xid other = ImagoXid.of(0x494d47, run + "-raw-other", "b");
        r.start(x, XAResource.TMNOFLAGS);
        r.publishJson(topic, run + "-raw-1", "{}");
        expectProto("start of another branch on an associated thread", () -> r.start(other, XAResource.TMNOFLAGS));
        r.end(x, XAResource.TMSUSPEND);
        expectProto("publish after end(TMSUSPEND)", () -> r.publishJson(topic, run + "-raw-suspended", "{}"));
        onOtherThread(() -> {
            r.start(x, XAResource.TMRESUME);
            r.publishJson(topic, run + "-raw-2", "{}");
            r.end(x, XAResource.TMSUCCESS);
        });
        r.start(x, XAResource.TMJOIN);
        r.publishJson(topic, run + "-raw-3", "{}");
        r.end(x, XAResource.TMSUCCESS);
        expectProto("publish after end(TMSUCCESS)", () -> r.publishJson(topic, run + "-raw-ended", "{}"));
        check("prepare of the moved branch", r.prepare(x) == XAResource.XA_OK, "not XA_OK");
        r.commit(x, false);

        // end(TMFAIL) from another thread (a timeout reaper) dissociates the thread that started it.
        r.start(other, XAResource.TMNOFLAGS);
        onOtherThread(() -> r.end(other, XAResource.TMFAIL));
        expectProto("publish after another thread's end(TMFAIL)", () -> r.publishJson(topic, run + "-raw-failed", "{}"));
        r.rollback(other);
        System.out.println("ok raw association: suspend, resume on another thread, join, end from another thread");
    }

    static void onOtherThread(Call c) throws Exception {
        ExecutorService one = Executors.newSingleThreadExecutor();
        try {
            one.submit(() -> {
                c.run();
                return null;
            }).get(1, TimeUnit.MINUTES);
        } finally {
            one.shutdownNow();
        }
    }

    /**
     * Thread a and thread b each begin a transaction and publish two messages through the same
     * ImagoXAResource, interleaved (a1, b1, a2, b2, with barriers between); then a commits and
     * b rolls back. A message in the other thread's branch would show up wrong: b's visible, or
     * a's gone.
     */
    static void twoThreads(App app, String run) throws Exception {
        CyclicBarrier turn = new CyclicBarrier(2);
        ExecutorService pool = Executors.newFixedThreadPool(2);
        try {
            List<Future<?>> fs = new ArrayList<>();
            for (String who : List.of("a", "b")) {
                fs.add(pool.submit(() -> {
                    String key = run + "-thread-" + who;
                    app.ut().begin();
                    try {
                        app.insert(key);
                        for (int i = 1; i <= 2; i++) {
                            turn.await(30, TimeUnit.SECONDS);
                            if (who.equals("b")) {
                                turn.await(30, TimeUnit.SECONDS); // b publishes after a
                            }
                            app.imago().publishJson(app.topic(), key + "-" + i, "{}");
                            if (who.equals("a")) {
                                turn.await(30, TimeUnit.SECONDS);
                            }
                        }
                        turn.await(30, TimeUnit.SECONDS); // both branches hold both messages
                    } catch (Exception e) {
                        app.ut().rollback();
                        throw e;
                    }
                    if (who.equals("a")) {
                        app.ut().commit();
                    } else {
                        app.ut().rollback();
                    }
                    return null;
                }));
            }
            for (Future<?> f : fs) {
                f.get(2, TimeUnit.MINUTES);
            }
            System.out.println("ok two threads, two transactions, one resource");
        } finally {
            pool.shutdownNow();
        }
    }

    // ---------------------------------------------------------------------------------------

    interface Call {
        void run() throws Exception;
    }

    static void expectProto(String name, Call c) {
        try {
            c.run();
            fail(name, "no exception");
        } catch (XAException e) {
            check(name, e.errorCode == XAException.XAER_PROTO, "errorCode " + e.errorCode + ", want XAER_PROTO: " + e.getMessage());
        } catch (Exception e) {
            fail(name, "threw " + e + ", want XAException(XAER_PROTO)");
        }
    }

    /** How many HTTP requests the broker has served (asked of the Go driver). */
    static long requests() throws Exception {
        System.out.println("REQUESTS imago");
        System.out.flush();
        String answer = driver.readLine();
        if (answer == null) {
            throw new IllegalStateException("the driver closed standard input");
        }
        return Long.parseLong(answer.trim());
    }

    static void check(String name, boolean ok, String why) {
        if (ok) {
            System.out.println("ok " + name);
        } else {
            fail(name, why);
        }
    }

    static void fail(String name, String why) {
        failures.add(name);
        System.out.println("FAIL " + name + ": " + why);
    }
}
