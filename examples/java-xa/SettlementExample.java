import io.imago.xa.ImagoXAResource;
import io.imago.xa.ImagoXid;
import io.imago.xa.Json;
import io.imago.xa.XACodes;
import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.UUID;
import javax.sql.XAConnection;
import javax.transaction.xa.XAException;
import javax.transaction.xa.XAResource;
import javax.transaction.xa.Xid;
import org.postgresql.xa.PGXADataSource;

/**
 * A settlement in one distributed transaction: debit an account in PostgreSQL and publish the
 * settlement message to Imago, both committed or neither. There is no JTA implementation here:
 * the two-phase commit loop is written out by hand, as a transaction manager runs it.
 *
 * <ol>
 *   <li>start a branch on each resource (same gtrid, one bqual per resource);
 *   <li>do the work: UPDATE the wallet (it must touch exactly one row: the account exists and
 *       has the funds) and publish the message;
 *   <li>end both branches; prepare both (each votes);
 *   <li>decide: commit only when every vote is yes. The decision is written and fsync'd to the
 *       decision log before phase 2, so a crash in phase 2 can be finished by recovery;
 *   <li>phase 2: commit (or roll back) every prepared branch.
 * </ol>
 * A failure before the decision rolls back every branch that was started.
 *
 * <p>A commit retried after XAER_RMFAIL (no answer: the first attempt may have committed the
 * branch) and then answered XAER_NOTA (the resource knows no such branch) most likely found the
 * branch already committed by that first attempt, since a resource forgets a branch once it is
 * committed. For Imago's branch the example checks it: the committed messages are appended after
 * the partitions' ends read before phase 2, so it looks for its own message there
 * ({@link TopicLookup}). For another resource it can only say "probably committed".
 *
 * <p>Exit status: 0 committed (checked, where a commit's answer was lost); 3 rolled back (e.g.
 * insufficient funds); 4 not known to be committed everywhere: in doubt (a phase-2 call kept
 * failing: recover() lists the branch and the decision log says what to do), probably committed
 * (a retried commit answered XAER_NOTA and the outcome could not be checked: verify), or a branch
 * lost (Imago answered XAER_NOTA and its message is not in the topic); 1 error.
 */
public final class SettlementExample {
    /** Our format id ("STL"), so that recovery can tell our branches from others. */
    static final int FORMAT_ID = 0x53544c;

    /** One enlisted resource and its branch. */
    record Branch(String name, XAResource xa, Xid xid) {}

    /** What phase 2 knows of a branch's commit. */
    enum Outcome {
        /** The resource answered the commit: committed. */
        COMMITTED,
        /** A retry answered XAER_NOTA after an attempt that may have committed; the lookup found the work. */
        COMMITTED_EARLIER,
        /** A retry answered XAER_NOTA after an attempt that may have committed; nothing could check it. */
        PROBABLY_COMMITTED,
        /** XAER_NOTA after an attempt that may have committed, and the lookup shows the work is not there. */
        LOST,
        /** The commit kept failing, or a heuristic or protocol answer: in doubt. */
        IN_DOUBT
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> o = new LinkedHashMap<>();
        o.put("--imago", "http://127.0.0.1:8080");
        o.put("--token", null);
        o.put("--jdbc", "jdbc:postgresql://127.0.0.1:5432/test?user=postgres");
        o.put("--account", "acct-42");
        o.put("--amount", "100");
        o.put("--topic", "settlement.transfers");
        o.put("--decision-log", "settlement-decisions.log");
        o.put("--init-balance", null);
        for (int i = 0; i < args.length; i++) {
            if (!o.containsKey(args[i]) || i + 1 >= args.length) {
                System.err.println("usage: SettlementExample " + String.join(" ", o.keySet().stream()
                        .map(k -> "[" + k + " V]").toList()));
                System.exit(1);
            }
            o.put(args[i], args[++i]);
        }
        String account = o.get("--account");
        long amount = Long.parseLong(o.get("--amount"));
        String topic = o.get("--topic");

        PGXADataSource ds = new PGXADataSource();
        ds.setUrl(o.get("--jdbc"));
        setUp(ds, o.get("--imago"), o.get("--token"), topic, account, o.get("--init-balance"));

        ImagoXAResource imago = ImagoXAResource.builder(o.get("--imago")).token(o.get("--token")).build();
        TopicLookup lookup = new TopicLookup(o.get("--imago"), o.get("--token"), topic);
        XAConnection pgConn = ds.getXAConnection();
        try {
            System.exit(settle(pgConn, imago, lookup, Path.of(o.get("--decision-log")), topic, account, amount));
        } finally {
            pgConn.close();
        }
    }

    static int settle(XAConnection pgConn, ImagoXAResource imago, TopicLookup lookup, Path decisionLog,
            String topic, String account, long amount) throws SQLException, IOException {
        String gtrid = "settle-" + UUID.randomUUID();
        Branch pg = new Branch("postgresql", pgConn.getXAResource(), ImagoXid.of(FORMAT_ID, gtrid, "pg"));
        Branch mq = new Branch("imago", imago, ImagoXid.of(FORMAT_ID, gtrid, "imago"));
        Connection sql = pgConn.getConnection();
        List<Branch> started = new ArrayList<>();

        // Phase 0: the work, inside both branches.
        try {
            pg.xa().start(pg.xid(), XAResource.TMNOFLAGS);
            started.add(pg);
            mq.xa().start(mq.xid(), XAResource.TMNOFLAGS);
            started.add(mq);

            int rows;
            try (PreparedStatement st = sql.prepareStatement(
                    "UPDATE example_wallets SET balance = balance - ? WHERE id = ? AND balance >= ?")) {
                st.setLong(1, amount);
                st.setString(2, account);
                st.setLong(3, amount);
                rows = st.executeUpdate();
            }
            if (rows != 1) {
                throw new IllegalStateException("debit of " + amount + " from " + account
                        + " affected " + rows + " rows (unknown account or insufficient funds)");
            }
            Map<String, Object> value = new LinkedHashMap<>(); // encoded, never spliced: an account is data
            value.put("account", account);
            value.put("amount", amount);
            value.put("gtrid", gtrid);
            imago.publishJson(mq.xid(), topic, account, Json.write(value));

            for (Branch b : started) {
                b.xa().end(b.xid(), XAResource.TMSUCCESS);
            }
        } catch (Exception e) {
            System.out.println("work failed: " + describe(e));
            log(decisionLog, gtrid, "rollback", "work failed");
            for (Branch b : started) {
                quietly(b, "end(fail)", () -> b.xa().end(b.xid(), XAResource.TMFAIL));
                quietly(b, "rollback", () -> b.xa().rollback(b.xid()));
            }
            System.out.println("rolled back " + gtrid);
            return 3;
        }

        // Phase 1: every branch votes.
        List<Branch> prepared = new ArrayList<>();
        String refusal = null;
        for (Branch b : started) {
            try {
                int vote = b.xa().prepare(b.xid());
                if (vote == XAResource.XA_OK) {
                    prepared.add(b);
                } // XA_RDONLY: the branch is finished, no phase 2
                System.out.println("prepare " + b.name() + ": " + (vote == XAResource.XA_OK ? "XA_OK" : "XA_RDONLY"));
            } catch (XAException e) {
                refusal = b.name() + " voted no: " + describe(e);
                break;
            }
        }

        // The decision, durable before phase 2.
        if (refusal != null) {
            System.out.println(refusal);
            log(decisionLog, gtrid, "rollback", refusal);
            for (Branch b : started) {
                quietly(b, "rollback", () -> b.xa().rollback(b.xid())); // a branch that voted no is gone already
            }
            System.out.println("rolled back " + gtrid);
            return 3;
        }
        log(decisionLog, gtrid, "commit", "all voted yes");

        // Where the topic ends before phase 2: Imago appends a committed branch's messages after
        // it, so a commit whose answer was lost can be checked there. Null when it cannot be read.
        Map<Integer, Long> endsBefore = lookup.ends();

        // Phase 2: commit every prepared branch, retrying while a resource manager is down.
        Map<Branch, Outcome> outcomes = new LinkedHashMap<>();
        for (Branch b : prepared) {
            Outcome out = commitWithRetry(b);
            if (out == Outcome.PROBABLY_COMMITTED && b == mq) {
                out = lookup.check(endsBefore, gtrid);
            }
            outcomes.put(b, out);
        }
        return report(outcomes, gtrid, topic, account, amount);
    }

    /** Says what phase 2 knows, and returns the exit status. */
    static int report(Map<Branch, Outcome> outcomes, String gtrid, String topic, String account, long amount) {
        List<String> lost = new ArrayList<>();
        List<String> probable = new ArrayList<>();
        List<String> inDoubt = new ArrayList<>();
        for (Map.Entry<Branch, Outcome> e : outcomes.entrySet()) {
            switch (e.getValue()) {
                case LOST -> lost.add(e.getKey().name());
                case PROBABLY_COMMITTED -> probable.add(e.getKey().name());
                case IN_DOUBT -> inDoubt.add(e.getKey().name());
                default -> { }
            }
        }
        if (!lost.isEmpty()) {
            System.out.println("branch lost " + gtrid + ": decided commit, but " + String.join(", ", lost)
                    + " answered XAER_NOTA and holds none of its work: the settlement is half committed; resend"
                    + " the message or compensate the debit");
            return 4;
        }
        if (!inDoubt.isEmpty()) {
            System.out.println("in doubt " + gtrid + ": decided commit; " + String.join(", ", inDoubt)
                    + " did not confirm its commit: recover() and the decision log finish it");
            return 4;
        }
        if (!probable.isEmpty()) {
            System.out.println("probably committed " + gtrid + ": " + String.join(", ", probable) + " answered"
                    + " XAER_NOTA to a retried commit whose first attempt may have committed the branch (a committed"
                    + " branch is forgotten); verify that its work is there");
            return 4;
        }
        System.out.println("committed " + gtrid + ": debited " + amount + " from " + account + ", published to " + topic);
        return 0;
    }

    /**
     * Commits a prepared branch, retrying XAER_RMFAIL and XA_RETRY. XAER_RMFAIL may come after the
     * resource committed (the answer was lost on the way), so XAER_NOTA to a later attempt most
     * likely means that attempt committed it: PROBABLY_COMMITTED, for the caller to check.
     */
    static Outcome commitWithRetry(Branch b) {
        boolean mayHaveCommitted = false;
        for (int attempt = 1; attempt <= 5; attempt++) {
            try {
                if (b.xa() instanceof ImagoXAResource) {
                    List<Map<String, Object>> at = ((ImagoXAResource) b.xa()).commitWithOffsets(b.xid(), false);
                    System.out.println("commit " + b.name() + ": ok " + at);
                } else {
                    b.xa().commit(b.xid(), false);
                    System.out.println("commit " + b.name() + ": ok");
                }
                return Outcome.COMMITTED;
            } catch (XAException e) {
                System.out.println("commit " + b.name() + " (attempt " + attempt + "): " + describe(e));
                if (e.errorCode == XAException.XAER_NOTA && mayHaveCommitted) {
                    return Outcome.PROBABLY_COMMITTED;
                }
                if (e.errorCode != XAException.XAER_RMFAIL && e.errorCode != XAException.XA_RETRY) {
                    return Outcome.IN_DOUBT; // heuristic or protocol answer: an operator must look
                }
                mayHaveCommitted |= e.errorCode == XAException.XAER_RMFAIL;
                try {
                    Thread.sleep(200L * attempt);
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    return Outcome.IN_DOUBT;
                }
            }
        }
        return Outcome.IN_DOUBT;
    }

    /**
     * Reads the topic over Imago's HTTP API to check a commit whose answer was lost: the ends of
     * its partitions before phase 2 ({@link #ends}), then whether the transaction's message (its
     * value's "gtrid") was appended after them ({@link #check}). It needs the right to read the
     * topic; without it, or with the broker unreachable, the outcome stays "probably committed".
     */
    static final class TopicLookup {
        private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        private final String base;
        private final String token;
        private final String topic;

        TopicLookup(String imagoUrl, String token, String topic) {
            this.base = imagoUrl.replaceAll("/+$", "") + "/v1/topics/" + URLEncoder.encode(topic, StandardCharsets.UTF_8);
            this.token = token;
            this.topic = topic;
        }

        /** The end offset of each partition, or null (said why) when they cannot be read. */
        Map<Integer, Long> ends() {
            try {
                return readEnds();
            } catch (Exception e) {
                System.out.println("read the ends of " + topic + ": " + describe(e)
                        + " (a commit whose answer is lost cannot be checked)");
                return null;
            }
        }

        private Map<Integer, Long> readEnds() throws IOException, InterruptedException {
            Map<Integer, Long> out = new TreeMap<>();
            for (Object p : list(get(""), "partitions")) {
                Map<?, ?> m = (Map<?, ?>) p;
                out.put(((Number) m.get("partition")).intValue(), ((Number) m.get("end_offset")).longValue());
            }
            return out;
        }

        /**
         * COMMITTED_EARLIER when a message of gtrid is in the topic after the ends read before
         * phase 2 (before == null: nothing to compare with), LOST when none is, PROBABLY_COMMITTED
         * when the topic cannot be read.
         */
        Outcome check(Map<Integer, Long> before, String gtrid) {
            if (before == null) {
                return Outcome.PROBABLY_COMMITTED;
            }
            try {
                for (Map.Entry<Integer, Long> e : readEnds().entrySet()) {
                    int p = e.getKey();
                    long end = e.getValue();
                    for (long off = before.getOrDefault(p, 0L); off < end; ) {
                        Map<String, Object> r = get("/partitions/" + p + "/messages?offset=" + off + "&max_messages=1000");
                        for (Object m : list(r, "messages")) {
                            Map<?, ?> msg = (Map<?, ?>) m;
                            if (msg.get("value") instanceof Map<?, ?> v && gtrid.equals(v.get("gtrid"))) {
                                System.out.println("commit imago: committed by an earlier attempt (its answer was lost):"
                                        + " the message of " + gtrid + " is at " + topic + " partition " + p
                                        + " offset " + msg.get("offset"));
                                return Outcome.COMMITTED_EARLIER;
                            }
                        }
                        long next = ((Number) r.get("next_offset")).longValue();
                        if (next <= off) {
                            break;
                        }
                        off = next;
                    }
                }
            } catch (Exception e) {
                System.out.println("check the commit in " + topic + ": " + describe(e));
                return Outcome.PROBABLY_COMMITTED;
            }
            System.out.println("commit imago: no message of " + gtrid + " in " + topic
                    + " after the partitions' ends before phase 2 " + before);
            return Outcome.LOST;
        }

        private Map<String, Object> get(String path) throws IOException, InterruptedException {
            HttpRequest.Builder rb = HttpRequest.newBuilder(URI.create(base + path)).timeout(Duration.ofSeconds(10))
                    .header("Accept", "application/json").GET();
            if (token != null) {
                rb.header("Authorization", "Bearer " + token);
            }
            HttpResponse<String> r = http.send(rb.build(), HttpResponse.BodyHandlers.ofString());
            if (r.statusCode() != 200) {
                throw new IOException("GET " + base + path + ": " + r.statusCode() + " " + r.body());
            }
            return Json.parseObject(r.body());
        }

        private static List<?> list(Map<String, Object> m, String field) throws IOException {
            if (m.get(field) instanceof List<?> l) {
                return l;
            }
            throw new IOException("an answer without \"" + field + "\": " + m);
        }
    }

    /** Appends "time gtrid decision reason" to the decision log and fsyncs it. */
    static void log(Path file, String gtrid, String decision, String reason) throws IOException {
        String line = Instant.now() + " " + gtrid + " " + decision + " " + reason.replace('\n', ' ') + "\n";
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.APPEND)) {
            ch.write(ByteBuffer.wrap(line.getBytes(StandardCharsets.UTF_8)));
            ch.force(true);
        }
        System.out.println("decision " + decision + " logged to " + file);
    }

    interface XACall {
        void run() throws XAException;
    }

    static void quietly(Branch b, String what, XACall c) {
        try {
            c.run();
        } catch (XAException e) {
            System.out.println(what + " " + b.name() + ": " + describe(e));
        }
    }

    static String describe(Exception e) {
        if (e instanceof XAException) {
            return XACodes.name(((XAException) e).errorCode) + " " + e.getMessage();
        }
        return e.toString();
    }

    /** Creates the wallet table and the topic when missing; sets the balance when asked. */
    static void setUp(PGXADataSource ds, String imagoUrl, String token, String topic, String account,
            String initBalance) throws Exception {
        XAConnection xc = ds.getXAConnection();
        try (Connection c = xc.getConnection(); Statement st = c.createStatement()) {
            st.execute("CREATE TABLE IF NOT EXISTS example_wallets (id text PRIMARY KEY,"
                    + " balance bigint NOT NULL CHECK (balance >= 0))");
            if (initBalance != null) {
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO example_wallets (id, balance) VALUES (?, ?)"
                        + " ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance")) {
                    ps.setString(1, account);
                    ps.setLong(2, Long.parseLong(initBalance));
                    ps.executeUpdate();
                }
            }
        } finally {
            xc.close();
        }
        HttpRequest.Builder rb = HttpRequest.newBuilder(URI.create(imagoUrl.replaceAll("/+$", "") + "/v1/topics/" + topic))
                .header("Content-Type", "application/json")
                .PUT(HttpRequest.BodyPublishers.ofString("{\"partitions\": 1}"));
        if (token != null) {
            rb.header("Authorization", "Bearer " + token);
        }
        HttpResponse<String> r = HttpClient.newHttpClient().send(rb.build(), HttpResponse.BodyHandlers.ofString());
        if (r.statusCode() != 200 && r.statusCode() != 201 && r.statusCode() != 409) { // 409: exists, other config
            throw new IllegalStateException("create topic " + topic + ": " + r.statusCode() + " " + r.body());
        }
    }
}
