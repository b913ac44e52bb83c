import bitronix.tm.Configuration;
import bitronix.tm.TransactionManagerServices;
import bitronix.tm.resource.jdbc.PoolingDataSource;
import io.imago.xa.ImagoXAResource;
import io.imago.xa.Json;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.Statement;
import java.util.LinkedHashMap;
import java.util.Map;
import javax.sql.DataSource;
import javax.transaction.HeuristicMixedException;
import javax.transaction.HeuristicRollbackException;
import javax.transaction.RollbackException;
import javax.transaction.SystemException;
import javax.transaction.UserTransaction;

/**
 * The settlement of ../SettlementExample.java — debit an account in PostgreSQL and publish the
 * settlement message to Imago, both or neither — under a real JTA transaction manager
 * (Bitronix), which runs the two-phase commit, writes the decision to its journal and recovers
 * after a crash. The application code ({@link #settle}) sees only JTA's UserTransaction, a JDBC
 * DataSource and Imago's client: no Xid, no XAResource call.
 *
 * <p>Exit status: 0 committed; 3 rolled back (unknown account or insufficient funds, or a no
 * vote at commit); 4 in doubt: the commit ended in a heuristic outcome or an unknown one (never
 * run it again blindly: that could debit twice); 1 error before the commit.
 */
public final class JtaSettlement {
    public static void main(String[] args) throws Exception {
        Map<String, String> o = new LinkedHashMap<>();
        o.put("--imago", "http://127.0.0.1:8080");
        o.put("--token", null);
        o.put("--jdbc", "jdbc:postgresql://127.0.0.1:5432/test?user=postgres");
        o.put("--account", "acct-42");
        o.put("--amount", "100");
        o.put("--topic", "settlement.transfers");
        o.put("--init-balance", null);
        o.put("--journal-dir", "btm");
        o.put("--server-id", "settlement-1");
        for (int i = 0; i < args.length; i++) {
            if (!o.containsKey(args[i]) || i + 1 >= args.length) {
                System.err.println("usage: JtaSettlement " + String.join(" ", o.keySet().stream()
                        .map(k -> "[" + k + " V]").toList()));
                System.exit(1);
            }
            o.put(args[i], args[++i]);
        }

        // Deployment, once per process: the manager and the two resources it enlists and recovers.
        Configuration c = TransactionManagerServices.getConfiguration();
        c.setServerId(o.get("--server-id"));          // must stay the same across restarts
        c.setLogPart1Filename(Path.of(o.get("--journal-dir"), "btm1.tlog").toString());
        c.setLogPart2Filename(Path.of(o.get("--journal-dir"), "btm2.tlog").toString());
        c.setDisableJmx(true);

        PoolingDataSource db = new PoolingDataSource();
        db.setUniqueName("postgresql");
        db.setClassName("org.postgresql.xa.PGXADataSource");
        db.setMaxPoolSize(8);
        db.setAllowLocalTransactions(true);           // for setUp's DDL, outside any transaction
        db.getDriverProperties().setProperty("url", o.get("--jdbc"));
        db.init();

        ImagoXAResource imago = ImagoXAResource.builder(o.get("--imago"))
                .token(o.get("--token"))
                .enlister(ImagoXAResourceProducer.enlister(TransactionManagerServices::getTransactionManager))
                .build();
        ImagoXAResourceProducer.register("imago", imago);

        UserTransaction ut = TransactionManagerServices.getTransactionManager(); // start-up recovery runs here
        int status;
        try {
            setUp(db, o.get("--imago"), o.get("--token"), o.get("--topic"), o.get("--account"), o.get("--init-balance"));
            status = settle(ut, db, imago, o.get("--topic"), o.get("--account"), Long.parseLong(o.get("--amount")));
        } finally {
            TransactionManagerServices.getTransactionManager().shutdown();
        }
        System.exit(status);
    }

    /** The application: one global transaction, a debit and a message. */
    static int settle(UserTransaction ut, DataSource db, ImagoXAResource imago, String topic, String account,
            long amount) throws Exception {
        ut.begin();
        try {
            int rows;
            try (Connection sql = db.getConnection();
                    PreparedStatement st = sql.prepareStatement(
                            "UPDATE example_wallets SET balance = balance - ? WHERE id = ? AND balance >= ?")) {
                st.setLong(1, amount);
                st.setString(2, account);
                st.setLong(3, amount);
                rows = st.executeUpdate();
            }
            if (rows != 1) {
                ut.rollback();
                System.out.println("rolled back: " + account + " is unknown or has less than " + amount);
                return 3;
            }
            // Joins the current transaction (the resource is enlisted on first use).
            Map<String, Object> value = new LinkedHashMap<>(); // encoded, never spliced: an account is data
            value.put("account", account);
            value.put("amount", amount);
            imago.publishJson(topic, account, Json.write(value));
        } catch (Exception | Error e) {
            ut.rollback();
            throw e;
        }
        try {
            ut.commit(); // two-phase commit over PostgreSQL and Imago
        } catch (RollbackException e) { // a no vote, or the timeout: nothing of it is committed
            System.out.println("rolled back: " + e);
            return 3;
        } catch (HeuristicMixedException | HeuristicRollbackException | SystemException e) {
            // Not a failure to send again: a heuristic outcome (part or all of it decided by a
            // resource against the manager) or an outcome unknown (the manager's journal and
            // its recovery finish it). Resending would debit twice; an operator must look.
            System.out.println("in doubt: " + e + " (Bitronix's journal and recovery finish it; check both"
                    + " sides before doing it again)");
            return 4;
        }
        System.out.println("committed: debited " + amount + " from " + account + ", published to " + topic);
        return 0;
    }

    /** Creates the wallet table and the topic when missing; sets the balance when asked. */
    static void setUp(DataSource db, String imagoUrl, String token, String topic, String account,
            String initBalance) throws Exception {
        try (Connection c = db.getConnection(); Statement st = c.createStatement()) {
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
