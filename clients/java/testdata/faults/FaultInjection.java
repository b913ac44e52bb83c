import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.imago.xa.ImagoXAException;
import io.imago.xa.ImagoXAResource;
import io.imago.xa.ImagoXid;
import io.imago.xa.XACodes;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import javax.transaction.xa.XAException;
import javax.transaction.xa.XAResource;
import javax.transaction.xa.Xid;

/**
 * ImagoXAResource's answers to faults, run by faults_test.go.
 *
 * <p>Most cases are FAULT INJECTION: a fake broker (the JDK's HttpServer) answers what a real
 * Imago cannot be made to answer on demand (a 500 from a handler panic or a proxy in between, a
 * 401 after a token rotation, a proxy's 404, a cluster follower's 307 to the leader, a redirect
 * loop, a 200 whose body is cut off, a 200 to prepare without a vote). The fake checks only what the resource sends and maps; the XA behaviour itself is
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
        try (CutFake fake = new CutFake()) {
            cutBodies(fake);
        }
        try (Fake fake = new Fake()) {
            prepareWithoutAVote(fake);
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

    /** What the cutting fake answers: status and body, and the Content-Length it declares (-1: the body's). */
    record Raw(int status, String body, int declared) {
        static Raw whole(int status, String body) {
            return new Raw(status, body, -1);
        }

        /** The status line, a Content-Length 100 bytes over the body, the body, then the connection closed. */
        static Raw cut(int status, String body) {
            return new Raw(status, body, body.getBytes(StandardCharsets.UTF_8).length + 100);
        }
    }

    interface RawResponder {
        Raw answer(Seen request);
    }

    /**
     * FAULT INJECTION: a fake broker over a plain ServerSocket, one request per connection, that
     * can answer a status line and a body shorter than its Content-Length and then close the
     * connection: a 2xx whose body is cut off (the connection dropped after the broker did the
     * work). The JDK's HttpServer cannot be made to send that; a real Imago cannot on demand.
     */
    static final class CutFake implements AutoCloseable {
        final ServerSocket server;
        final List<Seen> seen = new ArrayList<>();
        volatile RawResponder responder = r -> Raw.whole(200, "{}");

        CutFake() throws IOException {
            server = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
            Thread t = new Thread(this::serve, "cut-fake");
            t.setDaemon(true);
            t.start();
        }

        String url() {
            return "http://127.0.0.1:" + server.getLocalPort();
        }

        private void serve() {
            while (!server.isClosed()) {
                try (Socket c = server.accept()) {
                    handle(c);
                } catch (IOException e) {
                    // closed, or the client went away: next connection
                }
            }
        }

        private void handle(Socket c) throws IOException {
            InputStream in = c.getInputStream();
            ByteArrayOutputStream head = new ByteArrayOutputStream();
            while (true) { // up to the blank line after the headers
                int b = in.read();
                if (b < 0) {
                    return;
                }
                head.write(b);
                byte[] h = head.toByteArray();
                int n = h.length;
                if (n >= 4 && h[n - 4] == '\r' && h[n - 3] == '\n' && h[n - 2] == '\r' && h[n - 1] == '\n') {
                    break;
                }
            }
            String[] lines = head.toString(StandardCharsets.ISO_8859_1).split("\r\n");
            String[] requestLine = lines[0].split(" ");
            int length = 0;
            String authorization = null;
            for (String l : lines) {
                int colon = l.indexOf(':');
                if (colon > 0) {
                    String name = l.substring(0, colon).trim();
                    String value = l.substring(colon + 1).trim();
                    if (name.equalsIgnoreCase("Content-Length")) {
                        length = Integer.parseInt(value);
                    } else if (name.equalsIgnoreCase("Authorization")) {
                        authorization = value;
                    }
                }
            }
            String body = new String(in.readNBytes(length), StandardCharsets.UTF_8);
            Seen s = new Seen(requestLine[0], requestLine[1], authorization, body);
            synchronized (seen) {
                seen.add(s);
            }
            Raw a = responder.answer(s);
            byte[] b = a.body().getBytes(StandardCharsets.UTF_8);
            OutputStream out = c.getOutputStream();
            out.write(("HTTP/1.1 " + a.status() + " X\r\nContent-Type: application/json\r\nContent-Length: "
                    + (a.declared() < 0 ? b.length : a.declared()) + "\r\nConnection: close\r\n\r\n")
                    .getBytes(StandardCharsets.ISO_8859_1));
            out.write(b);
            out.flush();
        }

        List<Seen> take() {
            synchronized (seen) {
                List<Seen> out = new ArrayList<>(seen);
                seen.clear();
                return out;
            }
        }

        @Override
        public void close() throws IOException {
            server.close();
        }
    }

    static void expectNoException(String what, Call c) {
        try {
            c.run();
            System.out.println("ok   " + what);
        } catch (XAException e) {
            fail(what + ": " + XACodes.name(e.errorCode) + " (" + e.getMessage() + ")");
        } catch (Exception e) {
            fail(what + ": " + e);
        }
    }

    /**
     * A 2xx whose body is cut off: the broker did the verb, so the status line decides. commit
     * and rollback succeed (XAER_RMFAIL would make the manager retry a branch the broker has
     * forgotten, and get XAER_NOTA); commitWithOffsets returns an empty list. prepare, whose
     * vote is lost, asks recover: the branch listed votes XA_OK, not listed (held no message,
     * forgotten) XA_RDONLY, no answer XAER_RMFAIL. recover's own list cut off, and any answer
     * other than a 2xx cut off, stay XAER_RMFAIL.
     */
    static void cutBodies(CutFake fake) {
        ImagoXAResource r = ImagoXAResource.builder(fake.url()).token("tok").build();
        Xid x = ImagoXid.of(1, "faults-cut", "b");
        String xidJson = "{\"format_id\":1,\"gtrid\":\"" + HexFormat.of().formatHex(x.getGlobalTransactionId())
                + "\",\"bqual\":\"" + HexFormat.of().formatHex(x.getBranchQualifier()) + "\"}";
        String offsets = "{\"offsets\":[{\"topic\":\"t\",\"partition\":0,\"offset\":41}]}";

        fake.responder = s -> Raw.cut(200, offsets);
        fake.take();
        expectNoException("commit, 200 with its body cut off, succeeds", () -> r.commit(x, false));
        List<Seen> seen = fake.take();
        expect("commit, 200 cut off: one request, not retried (" + seen.size() + ")",
                seen.size() == 1 && seen.get(0).path().equals("/v1/xa/commit") && "Bearer tok".equals(seen.get(0).authorization()));
        expectNoException("commit one-phase, 200 with its body cut off, succeeds", () -> r.commit(x, true));
        expectNoException("commitWithOffsets, 200 with its body cut off, returns an empty list", () -> {
            List<Map<String, Object>> got = r.commitWithOffsets(x, false);
            if (!got.isEmpty()) {
                throw new IllegalStateException("got offsets " + got);
            }
        });
        fake.responder = s -> Raw.whole(200, offsets);
        expectNoException("commitWithOffsets, 200 whole, returns the offsets", () -> {
            List<Map<String, Object>> got = r.commitWithOffsets(x, false);
            if (got.size() != 1 || ((Number) got.get(0).get("offset")).longValue() != 41) {
                throw new IllegalStateException("got offsets " + got);
            }
        });
        fake.responder = s -> Raw.cut(200, "{\"state\":");
        expectNoException("rollback, 200 with its body cut off, succeeds", () -> r.rollback(x));
        expectNoException("forget, 200 with its body cut off, succeeds", () -> r.forget(x));
        Xid y = ImagoXid.of(1, "faults-cut-start", "b");
        expectNoException("start, end, publish, 200 with the body cut off, succeed", () -> {
            r.start(y, XAResource.TMNOFLAGS);
            r.publishJson(y, "t", "k", "{}");
            r.end(y, XAResource.TMSUCCESS);
        });

        // prepare: the vote is lost; recover tells whether the branch is prepared.
        String listed = "{\"xids\":[{\"format_id\":1,\"gtrid\":\"6f74686572\",\"bqual\":\"62\"}," + xidJson + "]}";
        String other = "{\"xids\":[{\"format_id\":1,\"gtrid\":\"6f74686572\",\"bqual\":\"62\"}]}";
        Object[][] prepares = { // the recover answer, the vote or error code wanted, what it stands for
            {Raw.whole(200, listed), XAResource.XA_OK, "recover lists the branch: XA_OK"},
            {Raw.whole(200, other), XAResource.XA_RDONLY, "recover does not list it: XA_RDONLY"},
            {Raw.whole(503, apiError("unavailable")), XAException.XAER_RMFAIL, "recover answers 503: XAER_RMFAIL"},
            {Raw.cut(200, listed), XAException.XAER_RMFAIL, "recover's list cut off too: XAER_RMFAIL"},
        };
        for (Object[] p : prepares) {
            for (String vote : new String[] {"ok", "rdonly"}) {
                fake.responder = s -> s.path().equals("/v1/xa/recover") ? (Raw) p[0]
                        : Raw.cut(200, "{\"vote\":\"" + vote + "\",\"st");
                String what = "prepare, 200 with its vote (" + vote + ") cut off, " + p[2];
                int want = (Integer) p[1];
                if (want == XAResource.XA_OK || want == XAResource.XA_RDONLY) {
                    try {
                        int got = r.prepare(x);
                        expect(what + " (got " + got + ")", got == want);
                    } catch (XAException e) {
                        fail(what + ": " + XACodes.name(e.errorCode) + " (" + e.getMessage() + ")");
                    }
                } else {
                    expectCode(what, want, () -> r.prepare(x));
                }
            }
        }
        fake.responder = s -> Raw.whole(200, "{\"vote\":\"rdonly\"}");
        expectNoException("prepare, 200 whole: its vote", () -> {
            if (r.prepare(x) != XAResource.XA_RDONLY) {
                throw new IllegalStateException("not XA_RDONLY");
            }
        });

        // Every other answer cut off stays as it was: XAER_RMFAIL.
        fake.responder = s -> Raw.cut(200, listed);
        expectCode("recover, 200 with its list cut off", XAException.XAER_RMFAIL,
                () -> r.recover(XAResource.TMSTARTRSCAN | XAResource.TMENDRSCAN));
        // A 2xx that is not the list (a proxy's page, an empty object) is no list either.
        for (String body : new String[] {"<html>ok</html>", "{}", "{\"xids\":null}"}) {
            fake.responder = s -> Raw.whole(200, body);
            expectCode("recover, 200 " + body, XAException.XAER_RMFAIL,
                    () -> r.recover(XAResource.TMSTARTRSCAN | XAResource.TMENDRSCAN));
            fake.responder = s -> s.path().equals("/v1/xa/recover") ? Raw.whole(200, body)
                    : Raw.cut(200, "{\"vote\":\"ok\",\"st");
            expectCode("prepare, 200 with its vote cut off, recover answers 200 " + body, XAException.XAER_RMFAIL,
                    () -> r.prepare(x));
        }
        fake.responder = s -> Raw.cut(500, apiError("internal_error"));
        expectCode("commit, 500 with its body cut off", XAException.XAER_RMFAIL, () -> r.commit(x, false));
        expectCode("start, 500 with its body cut off", XAException.XAER_RMFAIL, () -> r.start(y, XAResource.TMNOFLAGS));
        fake.responder = s -> Raw.cut(409, apiError("XA_HEURHAZ"));
        expectCode("commit, 409 XA_HEURHAZ with its body cut off", XAException.XAER_RMFAIL, () -> r.commit(x, false));
        fake.responder = s -> Raw.cut(307, "");
        expectCode("commit, 307 with its body cut off", XAException.XAER_RMFAIL, () -> r.commit(x, false));
    }

    /**
     * A 200 to prepare that came whole but gives no vote the resource knows: no vote (an empty
     * object from a proxy, a body that is not JSON) or another one (a newer broker's). The
     * broker did prepare, so it is read as a vote cut off: recover tells it. Listed, the branch
     * votes XA_OK; not listed, XA_RDONLY; recover failing or without a list, XAER_RMFAIL;
     * never XAER_RMERR, on which a manager rolls back the global transaction while the branch
     * here may be prepared. The messages say what the vote was, not that it was cut off.
     */
    static void prepareWithoutAVote(Fake fake) {
        ImagoXAResource r = ImagoXAResource.builder(fake.url()).token("tok").build();
        Xid x = ImagoXid.of(1, "faults-novote", "b");
        String xidJson = "{\"format_id\":1,\"gtrid\":\"" + HexFormat.of().formatHex(x.getGlobalTransactionId())
                + "\",\"bqual\":\"" + HexFormat.of().formatHex(x.getBranchQualifier()) + "\"}";
        String listed = "{\"xids\":[{\"format_id\":1,\"gtrid\":\"6f74686572\",\"bqual\":\"62\"}," + xidJson + "]}";
        String other = "{\"xids\":[{\"format_id\":1,\"gtrid\":\"6f74686572\",\"bqual\":\"62\"}]}";
        String[] votes = { // whole 200 answers to prepare
            "{}", "{\"state\":\"prepared\"}", "{\"vote\":\"\"}", "{\"vote\":null}", "<html>ok</html>",
            "{\"vote\":\"maybe\",\"state\":\"prepared\"}", "{\"vote\":\"OK\"}", "{\"vote\":1}",
        };
        Object[][] recovers = { // the recover answer, the vote or error code wanted, what it stands for
            {new Answer(200, listed), XAResource.XA_OK, "recover lists the branch: XA_OK"},
            {new Answer(200, other), XAResource.XA_RDONLY, "recover does not list it: XA_RDONLY"},
            {new Answer(503, apiError("unavailable")), XAException.XAER_RMFAIL, "recover answers 503: XAER_RMFAIL"},
            {new Answer(500, "<html>proxy error</html>"), XAException.XAER_RMFAIL, "recover answers a proxy's 500: XAER_RMFAIL"},
            {new Answer(200, "{}"), XAException.XAER_RMFAIL, "recover answers 200 {}: XAER_RMFAIL"},
        };
        for (String vote : votes) {
            for (Object[] p : recovers) {
                fake.responder = s -> s.path().equals("/v1/xa/recover") ? (Answer) p[0] : new Answer(200, vote);
                fake.take();
                String what = "prepare, 200 " + vote + ", " + p[2];
                int want = (Integer) p[1];
                try {
                    int got = r.prepare(x);
                    expect(what + " (got " + got + ")", got == want);
                } catch (XAException e) {
                    if (want == XAResource.XA_OK || want == XAResource.XA_RDONLY) {
                        fail(what + ": " + XACodes.name(e.errorCode) + " (" + e.getMessage() + ")");
                    } else if (e.errorCode != want) {
                        fail(what + ": got " + XACodes.name(e.errorCode) + ", want " + XACodes.name(want) + " (" + e.getMessage() + ")");
                    } else {
                        String m = String.valueOf(e.getMessage());
                        expect(what + ": " + XACodes.name(e.errorCode) + ", its message names the vote, not a cut (" + m + ")",
                                !m.contains("cut off") && (m.contains("carried no vote") || m.contains("is not one this client knows")));
                    }
                }
                List<Seen> seen = fake.take();
                expect(what + ": prepare asked recover",
                        seen.stream().anyMatch(s -> s.method().equals("GET") && s.path().equals("/v1/xa/recover")));
            }
        }
        // The votes the broker sends are taken as they are, without asking recover.
        for (Object[] v : new Object[][] {{"ok", XAResource.XA_OK}, {"rdonly", XAResource.XA_RDONLY}}) {
            fake.responder = s -> new Answer(200, "{\"vote\":\"" + v[0] + "\",\"state\":\"x\"}");
            fake.take();
            try {
                int got = r.prepare(x);
                List<Seen> seen = fake.take();
                expect("prepare, 200 vote " + v[0] + ": " + got + " from one request (" + seen.size() + ")",
                        got == (Integer) v[1] && seen.size() == 1);
            } catch (XAException e) {
                fail("prepare, 200 vote " + v[0] + ": " + XACodes.name(e.errorCode) + " (" + e.getMessage() + ")");
            }
        }
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
