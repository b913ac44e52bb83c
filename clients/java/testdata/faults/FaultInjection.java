import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.imago.xa.ImagoXAException;
import io.imago.xa.ImagoXAResource;
import io.imago.xa.ImagoXid;
import io.imago.xa.XACodes;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import javax.transaction.xa.XAException;
import javax.transaction.xa.XAResource;
import javax.transaction.xa.Xid;

/**
 * ImagoXAResource's answers to faults, run by faults_test.go.
 *
 * <p>Most cases are FAULT INJECTION: a fake broker (the JDK's HttpServer) answers what a real
 * Imago cannot be made to answer on demand (a 500 from a handler panic or a proxy in between, a
 * 401 after a token rotation, a proxy's 404, a cluster follower's 307 to the leader, a redirect
 * loop). The fake checks only what the resource sends and maps; the XA behaviour itself is
 * checked against the real broker by the conformance harness. The transaction timeout cases run
 * against the real Imago the Go test starts ({@code --imago URL}).
 *
 * <p>Prints "ok ..." or "FAIL ..." per case and "faults: PASS" at the end; exits 1 on a failure.
 */
public final class FaultInjection {
    private static final List<String> failures = new ArrayList<>();

    /** What the fake answers: status, body, headers. */
    record Answer(int status, String body, String... headers) {
    }

    /** A request the fake received. */
    record Seen(String method, String path, String authorization, String body) {
    }

    interface Responder {
        Answer answer(Seen request);
    }

    /** A fake broker on its own loopback port: it answers what its responder says and records every request. */
    static final class Fake implements AutoCloseable {
        final HttpServer server;
        final List<Seen> seen = new ArrayList<>();
        volatile Responder responder = r -> new Answer(200, "{}");

        Fake() throws IOException {
            server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
            server.createContext("/", this::handle);
            server.start();
        }

        String url() {
            return "http://127.0.0.1:" + server.getAddress().getPort();
        }

        private void handle(HttpExchange ex) throws IOException {
            try (ex) {
                Seen s = new Seen(ex.getRequestMethod(), ex.getRequestURI().getPath(),
                        ex.getRequestHeaders().getFirst("Authorization"),
                        new String(ex.getRequestBody().readAllBytes(), StandardCharsets.UTF_8));
                synchronized (seen) {
                    seen.add(s);
                }
                Answer a = responder.answer(s);
                for (int i = 0; i + 1 < a.headers().length; i += 2) {
                    ex.getResponseHeaders().add(a.headers()[i], a.headers()[i + 1]);
                }
                byte[] b = a.body().getBytes(StandardCharsets.UTF_8);
                if (b.length > 0) {
                    ex.getResponseHeaders().add("Content-Type", "application/json");
                }
                ex.sendResponseHeaders(a.status(), b.length == 0 ? -1 : b.length);
                if (b.length > 0) {
                    ex.getResponseBody().write(b);
                }
            }
        }

        List<Seen> take() {
            synchronized (seen) {
                List<Seen> out = new ArrayList<>(seen);
                seen.clear();
                return out;
            }
        }

        @Override
        public void close() {
            server.stop(0);
        }
    }

    static String apiError(String code) {
        return "{\"error\":{\"code\":\"" + code + "\",\"message\":\"injected " + code + "\"}}";
    }

    interface Call {
        void run() throws Exception;
    }

    static void expectCode(String what, int want, Call c) {
        try {
            c.run();
            fail(what + ": no exception, want " + XACodes.name(want));
        } catch (XAException e) {
            if (e.errorCode == want) {
                System.out.println("ok   " + what + ": " + XACodes.name(e.errorCode));
            } else {
                fail(what + ": got " + XACodes.name(e.errorCode) + ", want " + XACodes.name(want) + " (" + e.getMessage() + ")");
            }
        } catch (Exception e) {
            fail(what + ": " + e);
        }
    }

    static void expect(String what, boolean ok) {
        if (ok) {
            System.out.println("ok   " + what);
        } else {
            fail(what);
        }
    }

    static void fail(String what) {
        System.out.println("FAIL " + what);
        failures.add(what);
    }

    public static void main(String[] args) throws Exception {
        String imago = null;
        for (int i = 0; i + 1 < args.length; i += 2) {
            if (args[i].equals("--imago")) {
                imago = args[i + 1];
            } else {
                throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        try (Fake fake = new Fake()) {
            errorsWithoutAnXACode(fake);
        }
        try (Fake follower = new Fake(); Fake leader = new Fake()) {
            redirects(follower, leader);
        }
        if (imago != null) {
            transactionTimeout(imago);
        }
        System.out.println(failures.isEmpty() ? "faults: PASS" : "faults: " + failures.size() + " FAILED");
        System.exit(failures.isEmpty() ? 0 : 1);
    }

    /**
     * An error answer without an XA code says nothing of what became of the branch: for the
     * verbs whose error a manager reads as an outcome (commit, rollback, prepare, forget,
     * recover) it is XAER_RMFAIL, never XAER_RMERR (which from commit says "rolled back").
     */
    static void errorsWithoutAnXACode(Fake fake) {
        ImagoXAResource r = ImagoXAResource.builder(fake.url()).token("tok").build();
        Xid x = ImagoXid.of(1, "faults", "b");
        String internal = apiError("internal_error");
        String[][] faults = { // status, body, what it stands for
            {"500", internal, "500 internal_error (a handler panic)"},
            {"500", "<html>proxy error</html>", "500 from a proxy"},
            {"401", apiError("unauthorized"), "401 unauthorized (token rotated)"},
            {"403", apiError("forbidden"), "403 forbidden"},
            {"404", apiError("not_found"), "404 not_found (no such endpoint)"},
            {"404", "", "404 without a body (a proxy)"},
        };
        for (String[] f : faults) {
            int status = Integer.parseInt(f[0]);
            fake.responder = s -> new Answer(status, f[1]);
            expectCode("commit, " + f[2], XAException.XAER_RMFAIL, () -> r.commit(x, false));
            expectCode("commit one-phase, " + f[2], XAException.XAER_RMFAIL, () -> r.commit(x, true));
            expectCode("rollback, " + f[2], XAException.XAER_RMFAIL, () -> r.rollback(x));
            expectCode("prepare, " + f[2], XAException.XAER_RMFAIL, () -> r.prepare(x));
            expectCode("forget, " + f[2], XAException.XAER_RMFAIL, () -> r.forget(x));
            expectCode("recover, " + f[2], XAException.XAER_RMFAIL,
                    () -> r.recover(XAResource.TMSTARTRSCAN | XAResource.TMENDRSCAN));
        }
        // Before a branch is prepared, such an error stays XAER_RMERR (the manager rolls back).
        fake.responder = s -> new Answer(500, internal);
        expectCode("start, 500 internal_error", XAException.XAER_RMERR, () -> r.start(ImagoXid.of(1, "faults-start", "b"), XAResource.TMNOFLAGS));
        expectCode("end, 500 internal_error", XAException.XAER_RMERR, () -> r.end(x, XAResource.TMSUCCESS));
        expectCode("publish, 500 internal_error", XAException.XAER_RMERR, () -> r.publishJson(x, "t", "k", "{}"));

        // The XA codes the server names pass through unchanged, whatever the status.
        Object[][] named = {
            {503, "XAER_RMFAIL", XAException.XAER_RMFAIL},
            {500, "XAER_RMERR", XAException.XAER_RMERR},
            {404, "XAER_NOTA", XAException.XAER_NOTA},
            {409, "XAER_PROTO", XAException.XAER_PROTO},
            {409, "XA_HEURRB", XAException.XA_HEURRB},
            {409, "XA_HEURCOM", XAException.XA_HEURCOM},
            {409, "XA_HEURHAZ", XAException.XA_HEURHAZ},
            {409, "XA_RBROLLBACK", XAException.XA_RBROLLBACK},
        };
        for (Object[] n : named) {
            fake.responder = s -> new Answer((Integer) n[0], apiError((String) n[1]));
            expectCode("commit, " + n[0] + " " + n[1], (Integer) n[2], () -> r.commit(x, false));
            expectCode("rollback, " + n[0] + " " + n[1], (Integer) n[2], () -> r.rollback(x));
        }
        // A request the broker refused as malformed did nothing: XAER_INVAL, as before.
        fake.responder = s -> new Answer(400, apiError("invalid_json"));
        expectCode("commit, 400 invalid_json", XAException.XAER_INVAL, () -> r.commit(x, false));
        fake.responder = s -> new Answer(500, internal);
        try {
            r.commit(x, false);
        } catch (ImagoXAException e) {
            expect("the exception keeps the status and the API code (" + e.httpStatus() + " " + e.apiCode() + ")",
                    e.httpStatus() == 500 && "internal_error".equals(e.apiCode()));
        } catch (XAException e) {
            fail("commit threw a plain XAException: " + e);
        }
        fake.take();
    }

    /**
     * A cluster follower with {@code cluster.forward: redirect} answers every request 307 with
     * the leader's URL: the resource sends the same method, body and Authorization there, on
     * another port. A loop or too many hops is XAER_RMFAIL (nothing was acted on).
     */
    static void redirects(Fake follower, Fake leader) {
        ImagoXAResource r = ImagoXAResource.builder(follower.url()).token("tok").build();
        Xid x = ImagoXid.of(1, "faults-redirect", "b");
        follower.responder = s -> new Answer(307, "", "Location", leader.url() + s.path());
        leader.responder = s -> s.path().equals("/v1/xa/recover")
                ? new Answer(200, "{\"xids\":[{\"format_id\":1,\"gtrid\":\"6161\",\"bqual\":\"62\"}]}")
                : s.path().equals("/v1/xa/prepare") ? new Answer(200, "{\"vote\":\"ok\",\"state\":\"prepared\"}")
                : new Answer(200, "{\"offsets\":[]}");
        String[] verbs = {"start", "messages", "end", "prepare", "commit", "rollback", "forget", "recover"};
        for (String verb : verbs) {
            follower.take();
            leader.take();
            try {
                switch (verb) {
                    case "start" -> r.start(x, XAResource.TMNOFLAGS);
                    case "messages" -> r.publishJson(x, "t", "k", "{\"a\":1}");
                    case "end" -> r.end(x, XAResource.TMSUCCESS);
                    case "prepare" -> expect("prepare through the redirect votes XA_OK", r.prepare(x) == XAResource.XA_OK);
                    case "commit" -> r.commit(x, false);
                    case "rollback" -> r.rollback(x);
                    case "forget" -> r.forget(x);
                    default -> expect("recover through the redirect lists the leader's branch",
                            r.recover(XAResource.TMSTARTRSCAN | XAResource.TMENDRSCAN).length == 1);
                }
            } catch (XAException e) {
                fail(verb + " through a 307 to the leader: " + XACodes.name(e.errorCode) + " (" + e.getMessage() + ")");
                continue;
            }
            List<Seen> f = follower.take();
            List<Seen> l = leader.take();
            String want = verb.equals("recover") ? "GET" : "POST";
            boolean ok = f.size() == 1 && l.size() == 1
                    && l.get(0).method().equals(want) && l.get(0).path().equals(f.get(0).path())
                    && l.get(0).body().equals(f.get(0).body()) && (want.equals("GET") || !l.get(0).body().isEmpty())
                    && "Bearer tok".equals(l.get(0).authorization());
            expect(verb + " follows the 307 to the leader with the method, body and Authorization"
                    + (ok ? "" : ": follower saw " + f + ", leader saw " + l), ok);
        }
        // 308 too.
        follower.responder = s -> new Answer(308, "", "Location", leader.url() + s.path());
        try {
            r.commit(x, false);
            Seen l = leader.take().get(0);
            expect("commit follows a 308", l.method().equals("POST") && "Bearer tok".equals(l.authorization()));
        } catch (Exception e) {
            fail("commit through a 308: " + e);
        }
        // A relative Location resolves against the follower.
        follower.responder = s -> s.path().startsWith("/moved")
                ? new Answer(200, "{}") : new Answer(307, "", "Location", "/moved" + s.path());
        try {
            r.rollback(x);
            expect("a relative Location is followed on the same server",
                    follower.take().stream().anyMatch(s -> s.path().equals("/moved/v1/xa/rollback")));
        } catch (Exception e) {
            fail("rollback through a relative 307: " + e);
        }
        // A loop, too many hops, no Location: the request was not acted on, retry later.
        follower.responder = s -> new Answer(307, "", "Location", leader.url() + s.path());
        leader.responder = s -> new Answer(307, "", "Location", follower.url() + s.path());
        expectCode("commit, a redirect loop between two members", XAException.XAER_RMFAIL, () -> r.commit(x, false));
        expectCode("recover, a redirect loop between two members", XAException.XAER_RMFAIL,
                () -> r.recover(XAResource.TMSTARTRSCAN | XAResource.TMENDRSCAN));
        follower.take();
        follower.responder = s -> new Answer(307, "", "Location", follower.url() + s.path() + "/x");
        expectCode("commit, endless redirects", XAException.XAER_RMFAIL, () -> r.commit(x, false));
        expect("endless redirects stop after 1 + 5 requests", follower.take().size() == 6);
        follower.responder = s -> new Answer(307, "");
        expectCode("commit, a 307 without Location", XAException.XAER_RMFAIL, () -> r.commit(x, false));
        follower.responder = s -> new Answer(302, "", "Location", leader.url() + s.path());
        expectCode("commit, a 302 (not followed: it would turn the POST into a GET)", XAException.XAER_RMFAIL,
                () -> r.commit(x, false));
    }

    /**
     * Against the real broker: setTransactionTimeout returns false, and keeps the timeout it
     * had, for a value the broker cannot take (negative, over an hour), and the next start
     * works; the limit itself (3600 s) is taken; 0 goes back to the broker's default.
     */
    static void transactionTimeout(String imago) {
        ImagoXAResource r = ImagoXAResource.builder(imago).build();
        String run = Long.toHexString(System.nanoTime());
        int[][] cases = {{7200, 0}, {3601, 0}, {-1, 0}, {Integer.MAX_VALUE, 0}, {3600, 1}, {0, 1}, {60, 1}};
        try {
            expect("setTransactionTimeout(30)", r.setTransactionTimeout(30) && r.getTransactionTimeout() == 30);
            int want = 30;
            for (int[] c : cases) {
                int seconds = c[0];
                boolean accepted = r.setTransactionTimeout(seconds);
                if (accepted) {
                    want = seconds;
                }
                expect("setTransactionTimeout(" + seconds + ") returns " + (c[1] == 1) + ", timeout now " + want,
                        accepted == (c[1] == 1) && r.getTransactionTimeout() == want);
                Xid x = ImagoXid.of(7, "faults-timeout-" + run + "-" + seconds, "b");
                try {
                    r.start(x, XAResource.TMNOFLAGS);
                    r.end(x, XAResource.TMSUCCESS);
                    r.rollback(x);
                    System.out.println("ok   start after setTransactionTimeout(" + seconds + ")");
                } catch (XAException e) {
                    fail("start after setTransactionTimeout(" + seconds + ") (returned " + accepted + "): "
                            + XACodes.name(e.errorCode) + " " + e.getMessage());
                }
            }
        } catch (XAException e) {
            fail("setTransactionTimeout threw " + XACodes.name(e.errorCode) + ": " + e.getMessage());
        }
    }
}
