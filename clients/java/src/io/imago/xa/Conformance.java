package io.imago.xa;

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.lang.reflect.Method;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;
import javax.sql.XAConnection;
import javax.sql.XADataSource;
import javax.transaction.xa.XAException;
import javax.transaction.xa.XAResource;
import javax.transaction.xa.Xid;

/**
 * The XA conformance harness: runs the same sequence of XA calls against three resource
 * managers (Imago through {@link ImagoXAResource}, PostgreSQL through PGXADataSource, MariaDB
 * through MariaDbDataSource) and prints their answers side by side.
 *
 * <p>Each database branch does a real INSERT into a scratch table, and each Imago branch
 * publishes a message, so prepare is never read-only unless a scenario wants it. The JDBC
 * drivers are loaded by name at run time (put Debian's postgresql.jar and mariadb-java-client.jar
 * on the class path); this package compiles with the JDK alone.
 *
 * <p>Exit status: 0 when Imago agrees with the databases wherever the two databases agree (and
 * gives the documented answer where it differs by design); 1 otherwise; 2 on a usage or setup
 * error. Where the databases disagree with each other, the table says which one Imago follows.
 *
 * <p>Restarting a server: PostgreSQL with {@code pg_ctlcluster}, MariaDB by stopping mariadbd
 * and starting it again with the arguments it ran with (both overridable). Imago is restarted by
 * whoever started it: with {@code --imago-restart stdio} the harness prints the line
 * {@code RESTART imago} on standard output and waits for a line {@code READY} on standard input
 * (what the Go test driver does); any other value is a shell command to run.
 *
 * <pre>
 * java -cp classes:/usr/share/java/postgresql.jar:/usr/share/java/mariadb-java-client.jar \
 *   io.imago.xa.Conformance --imago http://127.0.0.1:8080 [--imago-restart none|stdio|CMD] \
 *   [--imago-token T] [--pg JDBC_URL] [--pg-restart CMD] [--mariadb JDBC_URL] [--mariadb-restart CMD]
 * </pre>
 */
public final class Conformance {
    /** Our branches' format id ("IMG"), so leftovers of an earlier run can be found and cleaned. */
    static final int FORMAT_ID = 0x494d47;
    static final String GTRID_PREFIX = "imago-conf-";
    static final String TABLE = "imago_xa_conformance";

    // ---------------------------------------------------------------------------------------
    // Targets: one resource manager each

    /** One connection (or client) to a resource manager, with the XAResource it exposes. */
    abstract static class Session implements AutoCloseable {
        abstract XAResource xa();

        /** Does the branch's work: an INSERT, or a published message, tagged with tag. */
        abstract void work(Xid xid, String tag) throws Exception;

        @Override
        public abstract void close();
    }

    /** A resource manager under test. */
    abstract static class Target {
        final String name;

        Target(String name) {
            this.name = name;
        }

        /** Prepares the target (scratch table, topic) and checks that it answers. */
        abstract void setUp() throws Exception;

        abstract Session open() throws Exception;

        /** Empties the scratch table, after leftovers of earlier runs are rolled back. */
        void clear() throws Exception {}

        /** Whether the work tagged tag is visible outside the branch (committed). */
        abstract boolean visible(String tag) throws Exception;

        /** Restarts the server and waits until it answers again. */
        abstract void restart() throws Exception;

        /** Whether restart() can run at all (Imago's restart may be switched off). */
        boolean canRestart() {
            return true;
        }
    }

    /** PostgreSQL or MariaDB through its driver's XADataSource. */
    static final class JdbcTarget extends Target {
        final String dataSourceClass;
        final String url;
        final String createTable;
        final Restarter restarter;
        private XADataSource ds;

        JdbcTarget(String name, String dataSourceClass, String url, String createTable, Restarter restarter) {
            super(name);
            this.dataSourceClass = dataSourceClass;
            this.url = url;
            this.createTable = createTable;
            this.restarter = restarter;
        }

        @Override
        void setUp() throws Exception {
            Object o;
            try {
                o = Class.forName(dataSourceClass).getDeclaredConstructor().newInstance();
            } catch (ClassNotFoundException e) {
                throw new IllegalStateException(dataSourceClass + " is not on the class path (install the Debian"
                        + " package with scripts/java-deps.sh and add its jar)", e);
            }
            Method setUrl = o.getClass().getMethod("setUrl", String.class);
            setUrl.invoke(o, url);
            ds = (XADataSource) o;
            withConnection(c -> {
                try (Statement st = c.createStatement()) {
                    st.execute(createTable);
                }
                return null;
            });
        }

        @Override
        void clear() throws SQLException {
            withConnection(c -> {
                try (Statement st = c.createStatement()) {
                    st.execute("DELETE FROM " + TABLE);
                }
                return null;
            });
        }

        interface SqlFn<T> {
            T apply(Connection c) throws SQLException;
        }

        /** Runs f on a plain (autocommit) connection of a new XAConnection, then closes both. */
        <T> T withConnection(SqlFn<T> f) throws SQLException {
            XAConnection xc = ds.getXAConnection();
            try (Connection c = xc.getConnection()) {
                return f.apply(c);
            } finally {
                xc.close();
            }
        }

        @Override
        Session open() throws SQLException {
            XAConnection xc = ds.getXAConnection();
            Connection c;
            XAResource xr;
            try {
                c = xc.getConnection();
                xr = xc.getXAResource();
            } catch (SQLException e) {
                xc.close();
                throw e;
            }
            return new Session() {
                @Override
                XAResource xa() {
                    return xr;
                }

                @Override
                void work(Xid xid, String tag) throws SQLException {
                    try (Statement st = c.createStatement()) {
                        // The tag is ours (letters, digits and '-'), so literal SQL is safe here.
                        st.executeUpdate("INSERT INTO " + TABLE + " (note) VALUES ('" + tag + "')");
                    }
                }

                @Override
                public void close() {
                    try {
                        xc.close();
                    } catch (SQLException e) {
                        // a connection to a restarted server: nothing to close
                    }
                }
            };
        }

        @Override
        boolean visible(String tag) throws SQLException {
            return withConnection(c -> {
                try (Statement st = c.createStatement();
                        ResultSet rs = st.executeQuery("SELECT count(*) FROM " + TABLE + " WHERE note = '" + tag + "'")) {
                    rs.next();
                    return rs.getLong(1) > 0;
                }
            });
        }

        @Override
        void restart() throws Exception {
            restarter.restart();
            waitUntil(name, Duration.ofSeconds(WAIT_SECONDS), () -> withConnection(c -> {
                try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT 1")) {
                    return rs.next();
                }
            }));
        }
    }

    /** Imago through ImagoXAResource; its messages go to one single-partition topic. */
    static final class ImagoTarget extends Target {
        final String url;
        final String token;
        final String topic;
        final String restartHow; // "stdio", "none" or a shell command
        private final HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(Duration.ofSeconds(5)).build();

        ImagoTarget(String url, String token, String topic, String restartHow) {
            super("Imago");
            this.url = url.replaceAll("/+$", "");
            this.token = token;
            this.topic = topic;
            this.restartHow = restartHow;
        }

        private HttpResponse<String> call(String method, String path, String body) throws IOException, InterruptedException {
            HttpRequest.Builder rb = HttpRequest.newBuilder(URI.create(url + path)).timeout(Duration.ofSeconds(30));
            if (token != null) {
                rb.header("Authorization", "Bearer " + token);
            }
            if (body != null) {
                rb.header("Content-Type", "application/json");
            }
            rb.method(method, body == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofString(body));
            return http.send(rb.build(), HttpResponse.BodyHandlers.ofString());
        }

        @Override
        void setUp() throws Exception {
            HttpResponse<String> r = call("PUT", "/v1/topics/" + topic, "{\"partitions\": 1}");
            if (r.statusCode() != 200 && r.statusCode() != 201) {
                throw new IllegalStateException("PUT /v1/topics/" + topic + ": " + r.statusCode() + " " + r.body());
            }
        }

        @Override
        Session open() {
            ImagoXAResource xr = ImagoXAResource.builder(url).token(token).build();
            return new Session() {
                @Override
                XAResource xa() {
                    return xr;
                }

                @Override
                void work(Xid xid, String tag) throws XAException {
                    xr.publishJson(xid, topic, tag, "{\"note\":\"" + tag + "\"}");
                }

                @Override
                public void close() {}
            };
        }

        @Override
        boolean visible(String tag) throws Exception {
            long offset = 0;
            while (true) {
                HttpResponse<String> r = call("GET", "/v1/topics/" + topic + "/partitions/0/messages?offset=" + offset
                        + "&max_messages=1000", null);
                if (r.statusCode() != 200) {
                    throw new IllegalStateException("fetch " + topic + ": " + r.statusCode() + " " + r.body());
                }
                Map<String, Object> out = Json.parseObject(r.body());
                List<?> msgs = (List<?>) out.get("messages");
                for (Object o : msgs) {
                    if (tag.equals(((Map<?, ?>) o).get("key"))) {
                        return true;
                    }
                }
                long next = ((Number) out.get("next_offset")).longValue();
                long end = ((Number) out.get("end_offset")).longValue();
                if (msgs.isEmpty() || next >= end) {
                    return false;
                }
                offset = next;
            }
        }

        @Override
        boolean canRestart() {
            return !restartHow.equals("none");
        }

        @Override
        void restart() throws Exception {
            if (restartHow.equals("stdio")) {
                System.out.println("RESTART imago");
                System.out.flush();
                String line = Stdin.next(Duration.ofSeconds(WAIT_SECONDS));
                if (line == null) {
                    throw new IllegalStateException("no READY on standard input within " + WAIT_SECONDS + "s");
                }
                if (!line.trim().equals("READY")) {
                    throw new IllegalStateException("the driver answered '" + line.trim() + "' instead of READY");
                }
            } else {
                Shell.run(restartHow, Duration.ofSeconds(WAIT_SECONDS));
            }
            waitUntil(name, Duration.ofSeconds(WAIT_SECONDS), () -> call("GET", "/healthz", null).statusCode() == 200);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Restarting servers

    static int WAIT_SECONDS = 60;

    interface Restarter {
        void restart() throws Exception;
    }

    interface Check {
        boolean ok() throws Exception;
    }

    /** Polls check every 200 ms until it answers true, at most d. */
    static void waitUntil(String what, Duration d, Check check) throws Exception {
        long deadline = System.nanoTime() + d.toNanos();
        Exception last = null;
        while (System.nanoTime() < deadline) {
            try {
                if (check.ok()) {
                    return;
                }
            } catch (Exception e) {
                last = e;
            }
            Thread.sleep(200);
        }
        throw new IllegalStateException(what + " did not answer within " + d.toSeconds() + "s after the restart"
                + (last != null ? ": " + last : ""));
    }

    /** Runs shell commands with a bound on their time; output goes to standard error. */
    static final class Shell {
        static String run(String command, Duration limit) throws Exception {
            return run(List.of("/bin/sh", "-c", command), limit);
        }

        static String run(List<String> argv, Duration limit) throws Exception {
            Process p = new ProcessBuilder(argv).redirectErrorStream(true).redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null"))).start();
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            Thread reader = new Thread(() -> {
                try (InputStream in = p.getInputStream()) {
                    in.transferTo(out);
                } catch (IOException e) {
                    // the process ended
                }
            });
            reader.setDaemon(true);
            reader.start();
            if (!p.waitFor(limit.toMillis(), TimeUnit.MILLISECONDS)) {
                p.destroyForcibly();
                throw new IllegalStateException(String.join(" ", argv) + ": still running after " + limit.toSeconds() + "s");
            }
            reader.join(2000);
            String text = out.toString(StandardCharsets.UTF_8).trim();
            if (!text.isEmpty()) {
                System.err.println("conformance: " + argv.get(argv.size() - 1) + ": " + text);
            }
            if (p.exitValue() != 0) {
                throw new IllegalStateException(String.join(" ", argv) + ": exit status " + p.exitValue()
                        + (text.isEmpty() ? "" : ": " + text));
            }
            return text;
        }
    }

    /** The newest PostgreSQL cluster named main under /etc/postgresql, e.g. "15". */
    static String postgresVersion() {
        File[] dirs = new File("/etc/postgresql").listFiles();
        String best = null;
        if (dirs != null) {
            for (File d : dirs) {
                if (new File(d, "main/postgresql.conf").isFile()) {
                    String v = d.getName();
                    if (best == null || compareVersions(v, best) > 0) {
                        best = v;
                    }
                }
            }
        }
        return best != null ? best : "15";
    }

    private static int compareVersions(String a, String b) {
        try {
            return Double.compare(Double.parseDouble(a), Double.parseDouble(b));
        } catch (NumberFormatException e) {
            return a.compareTo(b);
        }
    }

    /**
     * Restarts the mariadbd that runs now with the arguments it runs with, the way
     * scripts/services.sh starts it (start-stop-daemon, no systemd).
     */
    static void restartMariadbd() throws Exception {
        String exe = "/usr/sbin/mariadbd";
        ProcessHandle ph = ProcessHandle.allProcesses()
                .filter(p -> p.info().command().map(exe::equals).orElse(false))
                .findFirst()
                .orElseThrow(() -> new IllegalStateException("no running " + exe
                        + " found; pass --mariadb-restart with the command that restarts MariaDB here"));
        byte[] raw = Files.readAllBytes(Path.of("/proc/" + ph.pid() + "/cmdline"));
        List<String> args = new ArrayList<>(Arrays.asList(new String(raw, StandardCharsets.UTF_8).split("\0")));
        if (!args.isEmpty()) {
            args.remove(0); // argv[0]
        }
        System.err.println("conformance: restarting MariaDB (pid " + ph.pid() + ", arguments " + args + ")");
        Shell.run(List.of("start-stop-daemon", "--stop", "--exec", exe, "--retry", "TERM/" + WAIT_SECONDS + "/KILL/5"),
                Duration.ofSeconds(WAIT_SECONDS + 15));
        List<String> start = new ArrayList<>(List.of("start-stop-daemon", "--start", "--oknodo", "--background", "--exec", exe, "--"));
        start.addAll(args);
        Shell.run(start, Duration.ofSeconds(30));
    }

    /** Lines of standard input, read by a daemon thread so that waiting for one is bounded. */
    static final class Stdin {
        private static final BlockingQueue<String> LINES = new ArrayBlockingQueue<>(16);
        private static Thread reader;

        static synchronized String next(Duration d) throws InterruptedException {
            if (reader == null) {
                reader = new Thread(() -> {
                    try (BufferedReader r = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                        String line;
                        while ((line = r.readLine()) != null) {
                            LINES.put(line);
                        }
                    } catch (IOException | InterruptedException e) {
                        // standard input closed
                    }
                });
                reader.setDaemon(true);
                reader.start();
            }
            return LINES.poll(d.toMillis(), TimeUnit.MILLISECONDS);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Scenarios

    /** The outcome of one step: "ok", a vote (XA_OK, XA_RDONLY), an XA code, or a word. */
    interface Step {
        String run() throws Exception;
    }

    /** Runs a step and names its outcome; details collect the messages of failures. */
    static String step(List<String> details, String label, Step s) {
        try {
            return s.run();
        } catch (XAException e) {
            String msg = e.getMessage() == null && e.getCause() != null ? e.getCause().getMessage() : e.getMessage();
            String name = codeName(e.errorCode, msg);
            details.add(label + ": " + name + " (errorCode " + e.errorCode + "): " + msg);
            return name;
        } catch (Exception e) {
            details.add(label + ": " + e);
            return "ERROR";
        }
    }

    /**
     * The name of an XAException's code. A driver that throws errorCode 0 (no XA code at all;
     * MariaDB Connector/J 2.7 does so for the server's XAER_DUPID, error 1440) gets the XA code
     * its message names, marked with '*', or "XAException(0)".
     */
    static String codeName(int code, String message) {
        if (code != 0) {
            return XACodes.name(code);
        }
        if (message != null) {
            java.util.regex.Matcher m = java.util.regex.Pattern.compile("\\b(XAER_[A-Z]+|XA_[A-Z]+)\\b").matcher(message);
            while (m.find()) {
                if (XACodes.code(m.group(1)) != null) {
                    return m.group(1) + "*";
                }
            }
        }
        return "XAException(0)";
    }

    /** A cell without the '*' marks: what a transaction manager that reads messages would see. */
    static String unmarked(String cell) {
        return cell.replace("*", "");
    }

    static String ok(Runnable0 r) throws Exception {
        r.run();
        return "ok";
    }

    interface Runnable0 {
        void run() throws Exception;
    }

    static String vote(int v) {
        return v == XAResource.XA_OK ? "XA_OK" : XACodes.name(v);
    }

    static boolean listed(Xid[] xids, Xid x) {
        for (Xid y : xids) {
            if (ImagoXid.same(x, y)) {
                return true;
            }
        }
        return false;
    }

    /** What one scenario does against one target; returns the step outcomes joined by '/'. */
    interface Body {
        List<String> run(Target t, Xid xid, String tag, List<String> details) throws Exception;
    }

    /**
     * A scenario. strict: Imago must give the databases' answer when they agree. expectImago,
     * when set, is Imago's documented answer where it differs from the databases by design.
     */
    record Scenario(String name, String steps, Body body, String expectImago, String why) {}

    static List<Scenario> scenarios() {
        List<Scenario> s = new ArrayList<>();
        s.add(new Scenario("two-phase commit", "start/work/end/prepare/commit/visible", (t, x, tag, d) -> {
            try (Session a = t.open()) {
                XAResource r = a.xa();
                return List.of(
                        step(d, "start", () -> ok(() -> r.start(x, XAResource.TMNOFLAGS))),
                        step(d, "work", () -> ok(() -> a.work(x, tag))),
                        step(d, "end", () -> ok(() -> r.end(x, XAResource.TMSUCCESS))),
                        step(d, "prepare", () -> vote(r.prepare(x))),
                        step(d, "commit", () -> ok(() -> r.commit(x, false))),
                        step(d, "visible", () -> t.visible(tag) ? "yes" : "no"));
            }
        }, null, null));
        s.add(new Scenario("prepare then rollback", "start/work/end/prepare/rollback/visible/recover", (t, x, tag, d) -> {
            try (Session a = t.open()) {
                XAResource r = a.xa();
                return List.of(
                        step(d, "start", () -> ok(() -> r.start(x, XAResource.TMNOFLAGS))),
                        step(d, "work", () -> ok(() -> a.work(x, tag))),
                        step(d, "end", () -> ok(() -> r.end(x, XAResource.TMSUCCESS))),
                        step(d, "prepare", () -> vote(r.prepare(x))),
                        step(d, "rollback", () -> ok(() -> r.rollback(x))),
                        step(d, "visible", () -> t.visible(tag) ? "yes" : "no"),
                        step(d, "recover", () -> listed(r.recover(XAResource.TMSTARTRSCAN | XAResource.TMENDRSCAN), x) ? "listed" : "absent"));
            }
        }, null, null));
        s.add(new Scenario("recover after prepare", "prepare/recover(other conn)/rollback/recover", (t, x, tag, d) -> {
            try (Session a = t.open(); Session b = t.open()) {
                XAResource r = a.xa();
                step(d, "start", () -> ok(() -> r.start(x, XAResource.TMNOFLAGS)));
                step(d, "work", () -> ok(() -> a.work(x, tag)));
                step(d, "end", () -> ok(() -> r.end(x, XAResource.TMSUCCESS)));
                return List.of(
                        step(d, "prepare", () -> vote(r.prepare(x))),
                        step(d, "recover", () -> listed(b.xa().recover(XAResource.TMSTARTRSCAN | XAResource.TMENDRSCAN), x) ? "listed" : "absent"),
                        step(d, "rollback", () -> ok(() -> b.xa().rollback(x))),
                        step(d, "recover", () -> listed(b.xa().recover(XAResource.TMSTARTRSCAN | XAResource.TMENDRSCAN), x) ? "listed" : "absent"));
            }
        }, null, "X/Open lets any thread of control finish a prepared branch (a recovering transaction manager"
                + " has no other), as PostgreSQL does; MariaDB answers XAER_NOTA while the connection that prepared"
                + " the branch is still open"));
        s.add(new Scenario("unknown xid", "commit/rollback/forget", (t, x, tag, d) -> {
            try (Session a = t.open()) {
                XAResource r = a.xa();
                return List.of(
                        step(d, "commit", () -> ok(() -> r.commit(x, false))),
                        step(d, "rollback", () -> ok(() -> r.rollback(x))),
                        step(d, "forget", () -> ok(() -> r.forget(x))));
            }
        }, null, "forget is for heuristically completed branches, and the broker knows no such xid: XAER_NOTA,"
                + " as PostgreSQL answers; MariaDB's driver does nothing on forget and answers ok"));
        s.add(new Scenario("second start, other connection", "start/start(2nd conn)/prepare/rollback", (t, x, tag, d) -> {
            try (Session a = t.open(); Session b = t.open()) {
                XAResource r = a.xa();
                String first = step(d, "start", () -> ok(() -> r.start(x, XAResource.TMNOFLAGS)));
                step(d, "work", () -> ok(() -> a.work(x, tag)));
                String second = step(d, "second start", () -> ok(() -> b.xa().start(x, XAResource.TMNOFLAGS)));
                if (second.equals("ok")) { // the second connection holds a local branch now: drop it
                    step(d, "second end", () -> ok(() -> b.xa().end(x, XAResource.TMFAIL)));
                    step(d, "second rollback", () -> ok(() -> b.xa().rollback(x)));
                }
                step(d, "end", () -> ok(() -> r.end(x, XAResource.TMSUCCESS)));
                return List.of(first, second,
                        step(d, "prepare", () -> vote(r.prepare(x))),
                        step(d, "rollback", () -> ok(() -> r.rollback(x))));
            }
        }, null, "an xid the resource manager already knows is XAER_DUPID at start, as the MariaDB server answers;"
                + " PostgreSQL cannot see other connections' open transactions and would find the duplicate only at PREPARE"));
        s.add(new Scenario("second start, same connection", "start/start(again)", (t, x, tag, d) -> {
            try (Session a = t.open()) {
                XAResource r = a.xa();
                String first = step(d, "start", () -> ok(() -> r.start(x, XAResource.TMNOFLAGS)));
                step(d, "work", () -> ok(() -> a.work(x, tag)));
                String second = step(d, "second start", () -> ok(() -> r.start(x, XAResource.TMNOFLAGS)));
                step(d, "end", () -> ok(() -> r.end(x, XAResource.TMSUCCESS)));
                step(d, "rollback", () -> ok(() -> r.rollback(x)));
                return List.of(first, second);
            }
        }, "ok/XAER_DUPID", "X/Open: XAER_DUPID is the answer for an xid the RM already knows; the broker checks"
                + " that before the branch's state, whichever connection asks"));
        s.add(new Scenario("one-phase commit", "start/work/end/commit(1p)/visible", (t, x, tag, d) -> {
            try (Session a = t.open()) {
                XAResource r = a.xa();
                return List.of(
                        step(d, "start", () -> ok(() -> r.start(x, XAResource.TMNOFLAGS))),
                        step(d, "work", () -> ok(() -> a.work(x, tag))),
                        step(d, "end", () -> ok(() -> r.end(x, XAResource.TMSUCCESS))),
                        step(d, "commit one-phase", () -> ok(() -> r.commit(x, true))),
                        step(d, "visible", () -> t.visible(tag) ? "yes" : "no"));
            }
        }, null, null));
        s.add(new Scenario("one-phase commit after prepare", "prepare/commit(1p)/rollback", (t, x, tag, d) -> {
            try (Session a = t.open()) {
                XAResource r = a.xa();
                step(d, "start", () -> ok(() -> r.start(x, XAResource.TMNOFLAGS)));
                step(d, "work", () -> ok(() -> a.work(x, tag)));
                step(d, "end", () -> ok(() -> r.end(x, XAResource.TMSUCCESS)));
                return List.of(
                        step(d, "prepare", () -> vote(r.prepare(x))),
                        step(d, "commit one-phase", () -> ok(() -> r.commit(x, true))),
                        step(d, "rollback", () -> ok(() -> r.rollback(x))));
            }
        }, "XA_OK/XAER_PROTO/ok", "one-phase commit is only for a branch that was never prepared; after prepare"
                + " the protocol error is XAER_PROTO (what the X/Open spec names for a verb in the wrong state)"));
        s.add(new Scenario("prepare of an empty branch", "start/end/prepare/recover", (t, x, tag, d) -> {
            try (Session a = t.open()) {
                XAResource r = a.xa();
                List<String> out = List.of(
                        step(d, "start", () -> ok(() -> r.start(x, XAResource.TMNOFLAGS))),
                        step(d, "end", () -> ok(() -> r.end(x, XAResource.TMSUCCESS))),
                        step(d, "prepare", () -> vote(r.prepare(x))),
                        step(d, "recover", () -> listed(r.recover(XAResource.TMSTARTRSCAN | XAResource.TMENDRSCAN), x) ? "listed" : "absent"));
                if (out.get(2).equals("XA_OK")) {
                    step(d, "cleanup rollback", () -> ok(() -> r.rollback(x)));
                }
                return out;
            }
        }, "ok/ok/XA_RDONLY/absent", "API.md: a branch with no message votes rdonly and needs no phase 2;"
                + " XA allows any RM to vote XA_RDONLY, and a transaction manager must accept it"));
        s.add(new Scenario("recover after server restart", "prepare/restart/recover/commit/visible", (t, x, tag, d) -> {
            List<String> out = new ArrayList<>();
            try (Session a = t.open()) {
                XAResource r = a.xa();
                step(d, "start", () -> ok(() -> r.start(x, XAResource.TMNOFLAGS)));
                step(d, "work", () -> ok(() -> a.work(x, tag)));
                step(d, "end", () -> ok(() -> r.end(x, XAResource.TMSUCCESS)));
                out.add(step(d, "prepare", () -> vote(r.prepare(x))));
            }
            if (!t.canRestart()) {
                out.add("skipped");
                try (Session b = t.open()) {
                    step(d, "cleanup rollback", () -> ok(() -> b.xa().rollback(x)));
                }
                return out;
            }
            String restarted = step(d, "restart", () -> ok(t::restart));
            out.add(restarted);
            try (Session b = t.open()) {
                XAResource r = b.xa();
                out.add(step(d, "recover", () -> listed(r.recover(XAResource.TMSTARTRSCAN | XAResource.TMENDRSCAN), x) ? "listed" : "absent"));
                out.add(step(d, "commit", () -> ok(() -> r.commit(x, false))));
                out.add(step(d, "visible", () -> t.visible(tag) ? "yes" : "no"));
            }
            return out;
        }, null, null));
        return s;
    }

    // ---------------------------------------------------------------------------------------
    // Main

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new LinkedHashMap<>();
        a.put("--imago", null);
        a.put("--imago-token", null);
        a.put("--imago-topic", "xa.conformance");
        a.put("--imago-restart", "none");
        a.put("--pg", "jdbc:postgresql://127.0.0.1:5432/test?user=postgres");
        a.put("--pg-restart", "pg_ctlcluster --skip-systemctl-redirect " + postgresVersion() + " main restart");
        a.put("--mariadb", "jdbc:mariadb://127.0.0.1:3306/test?user=root");
        a.put("--mariadb-restart", "builtin");
        a.put("--wait", "60");
        for (int i = 0; i < argv.length; i++) {
            if (!a.containsKey(argv[i]) || i + 1 >= argv.length) {
                System.err.println("usage: Conformance --imago URL [--imago-token T] [--imago-topic T]"
                        + " [--imago-restart none|stdio|CMD] [--pg JDBC_URL] [--pg-restart CMD]"
                        + " [--mariadb JDBC_URL] [--mariadb-restart builtin|CMD] [--wait SECONDS]");
                System.exit(2);
            }
            a.put(argv[i], argv[++i]);
        }
        if (a.get("--imago") == null) {
            System.err.println("conformance: --imago URL is required (e.g. http://127.0.0.1:8080 after `make run`)");
            System.exit(2);
        }
        WAIT_SECONDS = Integer.parseInt(a.get("--wait"));
        String pgRestart = a.get("--pg-restart");
        String myRestart = a.get("--mariadb-restart");

        List<Target> targets = List.of(
                new ImagoTarget(a.get("--imago"), a.get("--imago-token"), a.get("--imago-topic"), a.get("--imago-restart")),
                new JdbcTarget("PostgreSQL", "org.postgresql.xa.PGXADataSource", a.get("--pg"),
                        "CREATE TABLE IF NOT EXISTS " + TABLE + " (id bigserial PRIMARY KEY, note text NOT NULL,"
                                + " at timestamptz NOT NULL DEFAULT now())",
                        () -> Shell.run(pgRestart, Duration.ofSeconds(WAIT_SECONDS))),
                new JdbcTarget("MariaDB", "org.mariadb.jdbc.MariaDbDataSource", a.get("--mariadb"),
                        "CREATE TABLE IF NOT EXISTS " + TABLE + " (id bigint AUTO_INCREMENT PRIMARY KEY,"
                                + " note varchar(200) NOT NULL, at timestamp(3) NOT NULL DEFAULT current_timestamp(3))"
                                + " ENGINE=InnoDB",
                        () -> {
                            if (myRestart.equals("builtin")) {
                                restartMariadbd();
                            } else {
                                Shell.run(myRestart, Duration.ofSeconds(WAIT_SECONDS));
                            }
                        }));
        for (Target t : targets) {
            try {
                t.setUp();
                cleanLeftovers(t);
                t.clear();
            } catch (Exception e) {
                System.err.println("conformance: " + t.name + " is not usable: " + e);
                System.exit(2);
            }
        }

        String run = Long.toString(System.currentTimeMillis(), 36);
        List<Scenario> scenarios = scenarios();
        List<String[]> rows = new ArrayList<>();
        List<String> notes = new ArrayList<>();
        boolean failed = false;
        for (int i = 0; i < scenarios.size(); i++) {
            Scenario sc = scenarios.get(i);
            String[] cells = new String[targets.size()];
            for (int j = 0; j < targets.size(); j++) {
                Target t = targets.get(j);
                String tag = GTRID_PREFIX + run + "-" + i + "-" + j;
                Xid xid = ImagoXid.of(FORMAT_ID, tag, "b" + j);
                List<String> details = new ArrayList<>();
                try {
                    cells[j] = String.join("/", sc.body().run(t, xid, tag, details));
                } catch (Exception e) {
                    details.add("scenario: " + e);
                    cells[j] = "ERROR";
                }
                for (String d : details) {
                    notes.add(sc.name() + " · " + t.name + " · " + d);
                }
            }
            String imago = unmarked(cells[0]), pg = unmarked(cells[1]), my = unmarked(cells[2]);
            String match;
            if (imago.contains("skipped")) {
                match = "skipped";
            } else if (pg.equals(my)) {
                match = imago.equals(pg) ? "yes" : "NO";
            } else if (imago.equals(pg)) {
                match = "follows PostgreSQL";
            } else if (imago.equals(my)) {
                match = "follows MariaDB";
            } else {
                match = "NO"; // the databases disagree and Imago follows neither
            }
            // Where Imago differs on purpose, its documented answer is required instead.
            if (match.equals("NO") && sc.expectImago() != null && imago.equals(sc.expectImago())) {
                match = "by design";
            }
            if (match.equals("NO") || imago.contains("ERROR") || pg.contains("ERROR") || my.contains("ERROR")) {
                failed = true;
            }
            rows.add(new String[] {sc.name(), sc.steps(), cells[0], cells[1], cells[2], match});
        }

        List<String> clientFailures = clientChecks((ImagoTarget) targets.get(0), run);
        failed |= !clientFailures.isEmpty();

        // Branches a database kept prepared (MariaDB keeps one whose rollback it refused).
        for (Target t : targets) {
            try {
                cleanLeftovers(t);
            } catch (Exception e) {
                System.err.println("conformance: " + t.name + ": cleaning up: " + e);
            }
        }

        printTable(rows);
        if (rows.stream().anyMatch(r -> String.join("", r).contains("*"))) {
            System.out.println("* the driver threw an XAException with errorCode 0 (no XA code); the code shown is the"
                    + " one the server's message names, compared as such.");
        }
        System.out.println();
        for (int i = 0; i < scenarios.size(); i++) {
            Scenario sc = scenarios.get(i);
            String[] r = rows.get(i);
            if (r[5].equals("by design")) {
                System.out.println("by design: " + sc.name() + ": Imago " + r[2] + ", PostgreSQL " + r[3]
                        + ", MariaDB " + r[4] + ". " + sc.why() + ".");
            } else if (r[5].startsWith("follows")) {
                System.out.println("databases disagree: " + sc.name() + ": PostgreSQL " + r[3] + ", MariaDB " + r[4]
                        + "; Imago (" + r[2] + ") " + r[5] + "." + (sc.why() != null ? " " + sc.why() + "." : ""));
            } else if (r[5].equals("NO")) {
                System.out.println("MISMATCH: " + sc.name() + ": Imago " + r[2] + ", PostgreSQL " + r[3] + ", MariaDB " + r[4] + ".");
            }
        }
        System.out.println();
        System.out.println("answers that were not ok (what each resource said):");
        for (String n : notes) {
            System.out.println("  " + n.replace('\n', ' '));
        }
        System.out.println();
        if (clientFailures.isEmpty()) {
            System.out.println("ImagoXAResource checks: ok (isSameRM, XAER_RMFAIL without a broker, XAER_INVAL for bad flags"
                    + " and an unknown topic, timeout_ms → XA_RBTIMEOUT, recover scan flags)");
        } else {
            System.out.println("ImagoXAResource checks FAILED:");
            for (String f : clientFailures) {
                System.out.println("  " + f);
            }
        }
        System.out.println(failed ? "conformance: FAIL" : "conformance: PASS");
        System.out.flush();
        System.exit(failed ? 1 : 0);
    }

    /** Checks of ImagoXAResource alone, where the databases have nothing to compare. */
    static List<String> clientChecks(ImagoTarget t, String run) {
        List<String> failures = new ArrayList<>();
        ImagoXAResource a = ImagoXAResource.builder(t.url).token(t.token).build();
        expect(failures, "isSameRM for the same base URL", a.isSameRM(ImagoXAResource.builder(t.url + "/").build()));
        expect(failures, "not isSameRM for another URL", !a.isSameRM(new ImagoXAResource("http://127.0.0.1:1")));
        expectCode(failures, "start on an unreachable broker", XAException.XAER_RMFAIL,
                () -> new ImagoXAResource("http://127.0.0.1:1").start(ImagoXid.of(FORMAT_ID, GTRID_PREFIX + run + "-c0", "b"), XAResource.TMNOFLAGS));
        Xid x = ImagoXid.of(FORMAT_ID, GTRID_PREFIX + run + "-c1", "b");
        expectCode(failures, "start with TMSUSPEND", XAException.XAER_INVAL, () -> a.start(x, XAResource.TMSUSPEND));
        expectCode(failures, "publish to an unknown topic", XAException.XAER_INVAL, () -> {
            a.start(x, XAResource.TMNOFLAGS);
            try {
                a.publishJson(x, "no.such.topic-" + run, "k", "{}");
            } finally {
                try {
                    a.end(x, XAResource.TMSUCCESS);
                    a.rollback(x);
                } catch (XAException e) {
                    failures.add("clean up after the unknown topic: " + XACodes.name(e.errorCode));
                }
            }
        });
        try {
            expect(failures, "setTransactionTimeout(1)", a.setTransactionTimeout(1) && a.getTransactionTimeout() == 1);
            Xid y = ImagoXid.of(FORMAT_ID, GTRID_PREFIX + run + "-c2", "b");
            a.start(y, XAResource.TMNOFLAGS);
            a.publishJson(y, t.topic, "timeout", "{}");
            Thread.sleep(1500);
            expectCode(failures, "end after the transaction timeout", XAException.XA_RBTIMEOUT,
                    () -> a.end(y, XAResource.TMSUCCESS));
            a.setTransactionTimeout(0);

            Xid z = ImagoXid.of(FORMAT_ID, GTRID_PREFIX + run + "-c3", "b");
            a.start(z, XAResource.TMNOFLAGS);
            a.publishJson(z, t.topic, "scan", "{}");
            a.end(z, XAResource.TMSUCCESS);
            a.prepare(z);
            expect(failures, "recover(TMSTARTRSCAN) lists the branch", listed(a.recover(XAResource.TMSTARTRSCAN), z));
            expect(failures, "recover(TMNOFLAGS) within a scan is empty", a.recover(XAResource.TMNOFLAGS).length == 0);
            expect(failures, "recover(TMENDRSCAN) is empty", a.recover(XAResource.TMENDRSCAN).length == 0);
            expect(failures, "recover(TMNOFLAGS) outside a scan lists the branch", listed(a.recover(XAResource.TMNOFLAGS), z));
            a.rollback(z);
        } catch (Exception e) {
            failures.add("client checks: " + e);
        }
        return failures;
    }

    static void expect(List<String> failures, String what, boolean ok) {
        if (!ok) {
            failures.add(what);
        }
    }

    static void expectCode(List<String> failures, String what, int code, Runnable0 r) {
        try {
            r.run();
            failures.add(what + ": ok, want " + XACodes.name(code));
        } catch (XAException e) {
            if (e.errorCode != code) {
                failures.add(what + ": " + XACodes.name(e.errorCode) + ", want " + XACodes.name(code) + " (" + e.getMessage() + ")");
            }
        } catch (Exception e) {
            failures.add(what + ": " + e);
        }
    }

    /** Rolls back prepared branches of our format: left by an interrupted run, or kept by a database. */
    static void cleanLeftovers(Target t) throws Exception {
        try (Session s = t.open()) {
            for (Xid x : s.xa().recover(XAResource.TMSTARTRSCAN | XAResource.TMENDRSCAN)) {
                String g = new String(x.getGlobalTransactionId(), StandardCharsets.UTF_8);
                if (x.getFormatId() == FORMAT_ID && g.startsWith(GTRID_PREFIX)) {
                    try {
                        s.xa().rollback(x);
                        System.err.println("conformance: " + t.name + ": rolled back a branch left prepared: " + g);
                    } catch (XAException e) {
                        System.err.println("conformance: " + t.name + ": leftover " + g + ": " + XACodes.name(e.errorCode));
                    }
                }
            }
        }
    }

    static void printTable(List<String[]> rows) {
        String[] head = {"scenario", "steps", "Imago", "PostgreSQL", "MariaDB", "match?"};
        int[] w = new int[head.length];
        for (int i = 0; i < head.length; i++) {
            w[i] = head[i].length();
            for (String[] r : rows) {
                w[i] = Math.max(w[i], r[i].length());
            }
        }
        StringBuilder sep = new StringBuilder("|");
        for (int x : w) {
            sep.append("-".repeat(x + 2)).append('|');
        }
        System.out.println(line(head, w));
        System.out.println(sep);
        for (String[] r : rows) {
            System.out.println(line(r, w));
        }
    }

    private static String line(String[] cells, int[] w) {
        StringBuilder sb = new StringBuilder("|");
        for (int i = 0; i < cells.length; i++) {
            sb.append(' ').append(cells[i]).append(" ".repeat(w[i] - cells[i].length())).append(" |");
        }
        return sb.toString();
    }

}
