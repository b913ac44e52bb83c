import io.imago.xa.ImagoXAResource;
import io.imago.xa.ImagoXid;
import io.imago.xa.XACodes;
import java.io.IOException;
import java.net.URI;
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
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
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
 * <p>Exit status: 0 committed; 3 rolled back (e.g. insufficient funds); 4 in doubt (a phase-2
 * call kept failing: recover() lists the branch and the decision log says what to do); 1 error.
 */
public final class SettlementExample {
    /** Our format id ("STL"), so that recovery can tell our branches from others. */
    static final int FORMAT_ID = 0x53544c;

    /** One enlisted resource and its branch. */
    record Branch(String name, XAResource xa, Xid xid) {}

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
        XAConnection pgConn = ds.getXAConnection();
        try {
            System.exit(settle(pgConn, imago, Path.of(o.get("--decision-log")), topic, account, amount));
        } finally {
            pgConn.close();
        }
    }

    static int settle(XAConnection pgConn, ImagoXAResource imago, Path decisionLog, String topic,
            String account, long amount) throws SQLException, IOException {
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
            imago.publishJson(mq.xid(), topic, account, "{\"account\":\"" + account + "\",\"amount\":" + amount
                    + ",\"gtrid\":\"" + gtrid + "\"}");

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

        // Phase 2: commit every prepared branch, retrying while a resource manager is down.
        boolean inDoubt = false;
        for (Branch b : prepared) {
            if (!commitWithRetry(b)) {
                inDoubt = true;
            }
        }
        if (inDoubt) {
            System.out.println("in doubt " + gtrid + ": decided commit; recover() and the decision log finish it");
            return 4;
        }
        System.out.println("committed " + gtrid + ": debited " + amount + " from " + account + ", published to " + topic);
        return 0;
    }

    static boolean commitWithRetry(Branch b) {
        for (int attempt = 1; attempt <= 5; attempt++) {
            try {
                if (b.xa() instanceof ImagoXAResource) {
                    List<Map<String, Object>> at = ((ImagoXAResource) b.xa()).commitWithOffsets(b.xid(), false);
                    System.out.println("commit " + b.name() + ": ok " + at);
                } else {
                    b.xa().commit(b.xid(), false);
                    System.out.println("commit " + b.name() + ": ok");
                }
                return true;
            } catch (XAException e) {
                System.out.println("commit " + b.name() + " (attempt " + attempt + "): " + describe(e));
                if (e.errorCode != XAException.XAER_RMFAIL && e.errorCode != XAException.XA_RETRY) {
                    return false; // heuristic or protocol answer: an operator must look
                }
                try {
                    Thread.sleep(200L * attempt);
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    return false;
                }
            }
        }
        return false;
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
