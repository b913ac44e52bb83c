package io.imago.xa;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpHeaders;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicReference;
import javax.transaction.xa.XAException;
import javax.transaction.xa.XAResource;
import javax.transaction.xa.Xid;

/**
 * Imago's broker as a {@link XAResource}, over the HTTP API (the XA resource endpoints,
 * /v1/xa/*, in api/openapi.yaml), with nothing beyond the JDK.
 *
 * <p>A transaction manager enlists it like a database's resource: {@code start}, then
 * {@link #publish} the branch's messages (they stay invisible), {@code end}, {@code prepare}
 * (the broker fsyncs the branch; it votes {@code XA_RDONLY} when the branch holds no message),
 * then {@code commit} or {@code rollback}. After a crash {@code recover} lists every prepared,
 * undecided branch and every heuristically completed one; {@code forget} clears the latter.
 *
 * <h2>Branch association</h2>
 *
 * <p>As with a JDBC {@code XAConnection}, work done through the resource belongs to the branch
 * its transaction manager started on it, on the calling thread: {@code start} associates the
 * calling thread with the branch, {@code end} (TMSUCCESS, TMFAIL or TMSUSPEND, from any thread)
 * dissociates it, {@code start} with TMJOIN or TMRESUME associates the calling thread again, and
 * {@code commit}/{@code rollback} clear whatever association is left. The methods without an xid
 * ({@link #publish(String, String, byte[])}, {@link #publishJson(String, String, String)},
 * {@link #publishMessages(List)}) add to the branch associated with the calling thread; with
 * none they throw {@code XAException(XAER_PROTO)} and send nothing, so a message is never
 * published outside a transaction by accident. One instance serves any number of threads, each
 * in its own transaction. The rules (X/Open's, with the broker as judge of the branch's state):
 * <ul>
 *   <li>{@code start} on a thread already associated with another branch of this instance:
 *       {@code XAER_PROTO}, nothing sent (one branch per thread and resource). With the same
 *       branch the broker answers ({@code XAER_DUPID} for TMNOFLAGS, as without association);
 *   <li>a failed {@code start} associates nothing; {@code end} dissociates even when it fails
 *       (a branch rolled back by its timeout, {@code XA_RBTIMEOUT}, has no work to take);
 *   <li>a suspended association may be resumed on any thread (there is no connection to migrate).
 * </ul>
 * With an {@link Enlister} ({@link Builder#enlister}), publishing with no association first
 * asks the enlister to enlist this resource in the calling thread's global transaction, as a
 * pooled JDBC DataSource enlists its connection: the manager calls {@code start} and the message
 * goes to the new branch. The xid-taking methods stay, for managers, tests and hand-written
 * two-phase commit; they ignore the association.
 *
 * <p>Errors are {@link ImagoXAException}s (an {@link XAException}) whose {@code errorCode} is the
 * XA code the server answered ({@code XAER_NOTA}, {@code XAER_PROTO}, {@code XAER_DUPID},
 * {@code XA_RBROLLBACK}, {@code XA_HEURCOM}, ...); a request that gets no answer, or a 503, is
 * {@code XAER_RMFAIL}, so a transaction manager retries it later, and so is any error answer
 * without an XA code to prepare, commit, rollback, forget or recover (see {@code errorFor}):
 * such an answer does not say what became of the branch. The status line decides: a 2xx whose
 * body is cut off is the verb's success (see {@link #commitWithOffsets} and {@link #prepare}
 * for what they return then; prepare treats a 2xx without a vote it knows the same way), any
 * other answer cut off is {@code XAER_RMFAIL}.
 *
 * <p>Instances are thread-safe; create one per broker URL and share it (its HttpClient pools the
 * connections). All instances with the same base URL talk to the same resource manager
 * ({@link #isSameRM}).
 */
public final class ImagoXAResource implements XAResource {
    /** The default time one HTTP request may take. */
    public static final Duration DEFAULT_REQUEST_TIMEOUT = Duration.ofSeconds(30);

    private static final System.Logger LOG = System.getLogger(ImagoXAResource.class.getName());

    private final String baseUrl;
    private final String token;
    private final HttpClient http;
    private final Duration requestTimeout;
    private final Enlister enlister; // null: publishing needs an association made by start()
    private final BranchAssociations associations = new BranchAssociations();

    // The transaction timeout: what the calling thread set last, else what any thread set last.
    // A manager sets it and then calls start on the same thread; with one instance shared by
    // concurrent transactions, a single field would let one transaction's start take another's.
    private volatile int timeoutSeconds; // 0: the broker's default
    private final ThreadLocal<Integer> threadTimeoutSeconds = new ThreadLocal<>();
    private boolean scanning; // a recover scan is open (guarded by this)

    /**
     * Enlists a resource in the calling thread's global transaction, the way a JTA manager's
     * {@code Transaction.enlistResource} does (which calls {@code start} on this thread). With
     * JTA: {@code r -> { Transaction tx = tm.getTransaction(); return tx != null && tx.enlistResource(r); }}.
     */
    @FunctionalInterface
    public interface Enlister {
        /** Enlists resource in the calling thread's transaction; false when there is none. */
        boolean enlist(XAResource resource) throws Exception;
    }

    /** A resource for the broker at {@code baseUrl} (e.g. "http://127.0.0.1:8080"), without auth. */
    public ImagoXAResource(String baseUrl) {
        this(builder(baseUrl));
    }

    /** A resource for the broker at {@code baseUrl} that sends {@code Authorization: Bearer token}. */
    public ImagoXAResource(String baseUrl, String token) {
        this(builder(baseUrl).token(token));
    }

    private ImagoXAResource(Builder b) {
        this.baseUrl = normalize(b.baseUrl);
        this.token = b.token;
        this.requestTimeout = b.requestTimeout;
        this.enlister = b.enlister;
        this.http = b.http != null ? b.http
                : HttpClient.newBuilder()
                        .version(HttpClient.Version.HTTP_1_1)
                        .connectTimeout(b.connectTimeout)
                        .followRedirects(HttpClient.Redirect.NEVER) // send() follows 307/308
                        .build();
    }

    /** Starts a builder for the broker at {@code baseUrl}. */
    public static Builder builder(String baseUrl) {
        return new Builder(baseUrl);
    }

    /** Options of an {@link ImagoXAResource}; each has a useful default. */
    public static final class Builder {
        private final String baseUrl;
        private String token;
        private HttpClient http;
        private Duration requestTimeout = DEFAULT_REQUEST_TIMEOUT;
        private Duration connectTimeout = Duration.ofSeconds(5);
        private Enlister enlister;

        private Builder(String baseUrl) {
            this.baseUrl = baseUrl;
        }

        /** The bearer token to send; null or empty for none (the default). */
        public Builder token(String token) {
            this.token = token == null || token.isEmpty() ? null : token;
            return this;
        }

        /**
         * The HttpClient to use (default: a new HTTP/1.1 client that follows no redirect; the
         * resource follows 307/308 itself, Authorization included). Give it
         * {@code Redirect.NEVER} too, or the client follows redirects by its own rules.
         */
        public Builder httpClient(HttpClient http) {
            this.http = http;
            return this;
        }

        /** How long one request may take before it fails with XAER_RMFAIL (default 30 s). */
        public Builder requestTimeout(Duration d) {
            this.requestTimeout = d;
            return this;
        }

        /** How long connecting may take (default 5 s); ignored with {@link #httpClient}. */
        public Builder connectTimeout(Duration d) {
            this.connectTimeout = d;
            return this;
        }

        /**
         * How publishing without an xid finds a branch when the calling thread has none: the
         * enlister enlists the resource in the thread's global transaction (default: none, and
         * publishing with no association fails with XAER_PROTO).
         */
        public Builder enlister(Enlister enlister) {
            this.enlister = enlister;
            return this;
        }

        public ImagoXAResource build() {
            return new ImagoXAResource(this);
        }
    }

    private static String normalize(String url) {
        if (url == null || url.isEmpty()) {
            throw new IllegalArgumentException("the broker's base URL is empty");
        }
        URI u = URI.create(url);
        if (u.getScheme() == null || u.getHost() == null
                || !(u.getScheme().equalsIgnoreCase("http") || u.getScheme().equalsIgnoreCase("https"))) {
            throw new IllegalArgumentException("the broker's base URL must be http(s)://host[:port], not " + url);
        }
        String s = u.getScheme().toLowerCase() + "://" + u.getHost().toLowerCase()
                + (u.getPort() >= 0 ? ":" + u.getPort() : "")
                + (u.getRawPath() == null ? "" : u.getRawPath());
        while (s.endsWith("/")) {
            s = s.substring(0, s.length() - 1);
        }
        return s;
    }

    /** The normalized base URL, which names the resource manager. */
    public String baseUrl() {
        return baseUrl;
    }

    // ---------------------------------------------------------------------------------------
    // XAResource

    /** Starts (TMNOFLAGS), joins (TMJOIN) or resumes (TMRESUME) xid and associates the calling thread with it. */
    @Override
    public void start(Xid xid, int flags) throws XAException {
        Map<String, Object> body = xidBody(xid);
        switch (flags) {
            case TMNOFLAGS:
                body.put("flags", "noflags");
                int t = getTransactionTimeout();
                if (t > 0) {
                    body.put("timeout_ms", t * 1000L);
                }
                break;
            case TMJOIN:
                body.put("flags", "join");
                break;
            case TMRESUME:
                body.put("flags", "resume");
                break;
            default:
                throw invalid("start flags must be TMNOFLAGS, TMJOIN or TMRESUME, not " + flags);
        }
        ImagoXid held = associations.current();
        if (held != null && !ImagoXid.same(held, xid)) {
            throw new ImagoXAException(XAException.XAER_PROTO, 0, null, "start " + ImagoXid.copyOf(xid)
                    + ": this thread is still associated with branch " + held + " of " + this
                    + "; end it first (one branch per thread and resource)", null);
        }
        post("/v1/xa/start", body);
        associations.associate(xid);
    }

    /** Ends the work on xid (TMSUCCESS, TMFAIL, TMSUSPEND) and dissociates it from its thread, whatever the answer. */
    @Override
    public void end(Xid xid, int flags) throws XAException {
        Map<String, Object> body = xidBody(xid);
        switch (flags) {
            case TMSUCCESS:
                body.put("flags", "success");
                break;
            case TMFAIL:
                body.put("flags", "fail");
                break;
            case TMSUSPEND:
                body.put("flags", "suspend");
                break;
            default:
                throw invalid("end flags must be TMSUCCESS, TMFAIL or TMSUSPEND, not " + flags);
        }
        associations.end(xid);
        post("/v1/xa/end", body);
    }

    /**
     * Prepares the branch: {@code XA_OK}, or {@code XA_RDONLY} when it holds no message (no phase 2 then).
     * Only the vote {@code "ok"} is {@code XA_OK} and only {@code "rdonly"} is {@code XA_RDONLY}.
     * When the broker answered 2xx (it prepared the branch, or found it empty and forgot it) but
     * gave no vote this resource knows, because its answer was cut off (the vote is lost) or came
     * whole without a vote or with another one ({@code {}} from a proxy, a vote of a newer
     * broker), the resource asks {@code recover}, and votes {@code XA_OK} when the branch is
     * listed and {@code XA_RDONLY} when it is not; when recover fails the vote is unknown:
     * {@code XAER_RMFAIL} (the manager finds the branch through recover later), never
     * {@code XAER_RMERR}, on which a manager rolls back a global transaction whose branch here
     * may be prepared.
     */
    @Override
    public int prepare(Xid xid) throws XAException {
        Answer a = post("/v1/xa/prepare", xidBody(xid));
        if (a.cut() != null) {
            return voteFromRecover(xid, a, "its vote was cut off (" + a.cut() + ")");
        }
        Object vote = a.json().get("vote");
        if ("ok".equals(vote)) {
            return XA_OK;
        }
        if ("rdonly".equals(vote)) {
            return XA_RDONLY;
        }
        if (vote == null || "".equals(vote)) {
            return voteFromRecover(xid, a, "its answer carried no vote");
        }
        return voteFromRecover(xid, a, "its vote " + Json.write(vote) + " is not one this client knows");
    }

    /**
     * The vote of a prepare whose 2xx answer gave none ({@code why}: cut off, missing or
     * unknown): the broker prepared the branch, which recover lists until it is committed or
     * rolled back, or found it empty and forgot it. A recover that fails, or whose list cannot
     * be read, leaves the vote unknown: XAER_RMFAIL.
     */
    private int voteFromRecover(Xid xid, Answer a, String why) throws XAException {
        Answer r;
        try {
            r = send("GET", "/v1/xa/recover", null);
        } catch (ImagoXAException e) {
            throw new ImagoXAException(XAException.XAER_RMFAIL, a.status(), null, "prepare " + xid
                    + ": the broker answered " + a.status() + " but " + why
                    + ", and recover, which would tell whether the branch is prepared, failed: " + e.getMessage(), e);
        }
        if (r.cut() == null && r.json().get("xids") instanceof List) {
            for (Object o : (List<?>) r.json().get("xids")) {
                if (ImagoXid.same(parseXid(o), xid)) {
                    LOG.log(System.Logger.Level.WARNING, "prepare {0}: the broker answered {1} but {2};"
                            + " recover lists the branch: XA_OK", xid, a.status(), why);
                    return XA_OK;
                }
            }
            LOG.log(System.Logger.Level.WARNING, "prepare {0}: the broker answered {1} but {2};"
                    + " recover does not list the branch (it held no message): XA_RDONLY", xid, a.status(), why);
            return XA_RDONLY;
        }
        throw new ImagoXAException(XAException.XAER_RMFAIL, a.status(), null, "prepare " + xid
                + ": the broker answered " + a.status() + " but " + why + ", and recover, which would tell"
                + " whether the branch is prepared, answered " + r.status() + " without a list it could read"
                + (r.cut() != null ? " (cut off: " + r.cut() + ")" : ""), a.cut() != null ? a.cut() : r.cut());
    }

    @Override
    public void commit(Xid xid, boolean onePhase) throws XAException {
        commitWithOffsets(xid, onePhase);
    }

    /**
     * Commits like {@link #commit} and returns where the branch's messages were stored, each a
     * map with "topic", "partition" and "offset", in the order they were published.
     *
     * <p>When the broker answered that the branch is committed (2xx) but the rest of its answer
     * was cut off (the connection dropped, or a read failed, while the body was read),
     * the branch is committed: this returns an empty list, without an exception, and logs a
     * WARNING (System.Logger "io.imago.xa.ImagoXAResource") naming the xid. The positions are
     * then unknown here; the messages are in their topics. (No XA code says "committed, answer
     * lost", and an exception would make a caller retry a commit the broker has forgotten.)
     */
    public List<Map<String, Object>> commitWithOffsets(Xid xid, boolean onePhase) throws XAException {
        Map<String, Object> body = xidBody(xid);
        body.put("one_phase", onePhase);
        associations.end(xid);
        Answer a = post("/v1/xa/commit", body);
        Map<String, Object> out = a.json();
        if (a.cut() != null) {
            LOG.log(System.Logger.Level.WARNING, "commit {0}: the broker answered {1} (committed) but the rest"
                    + " of its answer was cut off ({2}); the offsets are unknown", xid, a.status(), a.cut());
        }
        List<Map<String, Object>> offsets = new ArrayList<>();
        if (out.get("offsets") instanceof List) {
            for (Object o : (List<?>) out.get("offsets")) {
                if (o instanceof Map) {
                    @SuppressWarnings("unchecked")
                    Map<String, Object> m = (Map<String, Object>) o;
                    offsets.add(m);
                }
            }
        }
        return offsets;
    }

    @Override
    public void rollback(Xid xid) throws XAException {
        Map<String, Object> body = xidBody(xid);
        associations.end(xid);
        post("/v1/xa/rollback", body);
    }

    @Override
    public void forget(Xid xid) throws XAException {
        post("/v1/xa/forget", xidBody(xid));
    }

    /**
     * Lists prepared and heuristically completed branches. As JTA describes a scan: TMSTARTRSCAN
     * (alone or with TMENDRSCAN) returns them all and opens a scan; TMNOFLAGS or TMENDRSCAN
     * while a scan is open continue it and return nothing more (everything came at the start);
     * TMNOFLAGS outside a scan returns them all.
     */
    @Override
    public Xid[] recover(int flag) throws XAException {
        boolean start = (flag & TMSTARTRSCAN) != 0;
        boolean end = (flag & TMENDRSCAN) != 0;
        if ((flag & ~(TMSTARTRSCAN | TMENDRSCAN)) != 0) {
            throw invalid("recover flags must be TMSTARTRSCAN, TMENDRSCAN, both or TMNOFLAGS, not " + flag);
        }
        boolean list;
        synchronized (this) {
            list = start || !scanning;
            scanning = (start || scanning) && !end;
        }
        if (!list) {
            return new Xid[0];
        }
        Answer a = send("GET", "/v1/xa/recover", null);
        if (a.cut() != null) {
            throw new ImagoXAException(XAException.XAER_RMFAIL, a.status(), null, "GET /v1/xa/recover: the broker"
                    + " answered " + a.status() + " but the list of branches was cut off: " + a.cut(), a.cut());
        }
        // A 2xx without the list (a proxy's page, a body that is not JSON) is no answer: read as
        // an empty list it would tell the manager that nothing is prepared here, and a manager
        // may then take a committed transaction's branch as finished while it waits, prepared.
        if (!(a.json().get("xids") instanceof List)) {
            throw new ImagoXAException(XAException.XAER_RMFAIL, a.status(), null, "GET /v1/xa/recover: the broker"
                    + " answered " + a.status() + " without the list of branches (no \"xids\" array in its body)", null);
        }
        List<Xid> xids = new ArrayList<>();
        for (Object o : (List<?>) a.json().get("xids")) {
            xids.add(parseXid(o));
        }
        return xids.toArray(new Xid[0]);
    }

    /** Same resource manager: another ImagoXAResource for the same base URL. */
    @Override
    public boolean isSameRM(XAResource other) {
        return other instanceof ImagoXAResource && ((ImagoXAResource) other).baseUrl.equals(baseUrl);
    }

    /** The longest transaction timeout the broker takes (timeout_ms up to 3,600,000). */
    public static final int MAX_TRANSACTION_TIMEOUT_SECONDS = 3600;

    /**
     * Sets the timeout that {@code start(TMNOFLAGS)} sends; 0 means the broker's default (30 s).
     * It holds for the calling thread's later starts, and for other threads' until they set their
     * own. As JTA has it, returns false, and keeps the timeout as it was, for a value this
     * resource cannot set: a negative one or one over {@link #MAX_TRANSACTION_TIMEOUT_SECONDS}
     * (the broker would refuse every start that carried it).
     */
    @Override
    public boolean setTransactionTimeout(int seconds) throws XAException {
        if (seconds < 0 || seconds > MAX_TRANSACTION_TIMEOUT_SECONDS) {
            return false;
        }
        timeoutSeconds = seconds;
        threadTimeoutSeconds.set(seconds);
        return true;
    }

    @Override
    public int getTransactionTimeout() {
        Integer t = threadTimeoutSeconds.get();
        return t != null ? t : timeoutSeconds;
    }

    // ---------------------------------------------------------------------------------------
    // Messages of the calling thread's branch

    /**
     * Adds one message with a binary value to the branch associated with the calling thread
     * (enlisting first, with an {@link Enlister}); {@code XAER_PROTO} when there is none.
     */
    public void publish(String topic, String key, byte[] value) throws XAException {
        publish(associatedBranch(), topic, key, value);
    }

    /** Adds one message whose value is JSON text to the calling thread's branch, as {@link #publish(String, String, byte[])}. */
    public void publishJson(String topic, String key, String jsonValue) throws XAException {
        publishJson(associatedBranch(), topic, key, jsonValue);
    }

    /** Adds messages (the API's message shape) to the calling thread's branch, as {@link #publish(String, String, byte[])}. */
    public void publishMessages(List<Map<String, Object>> messages) throws XAException {
        publishMessages(associatedBranch(), messages);
    }

    /**
     * The branch the calling thread is associated with; without one, asks the enlister (if any)
     * to enlist this resource in the thread's transaction, whose start associates it.
     */
    private Xid associatedBranch() throws XAException {
        Xid xid = associations.current();
        if (xid != null) {
            return xid;
        }
        if (enlister == null) {
            throw new ImagoXAException(XAException.XAER_PROTO, 0, null, "publish through " + this
                    + ": no transaction branch is associated with this thread; a transaction manager"
                    + " associates one when it enlists the resource (start), or pass the xid", null);
        }
        boolean enlisted;
        try {
            enlisted = enlister.enlist(this);
        } catch (XAException e) {
            throw e;
        } catch (Exception e) {
            throw new ImagoXAException(XAException.XAER_PROTO, 0, null, "publish through " + this
                    + ": the transaction manager did not enlist the resource: " + e, e);
        }
        xid = associations.current();
        if (xid == null) {
            throw new ImagoXAException(XAException.XAER_PROTO, 0, null, "publish through " + this + ": "
                    + (enlisted ? "the resource was enlisted but no branch was started on this thread"
                            : "this thread has no global transaction (begin one first)"), null);
        }
        return xid;
    }

    // ---------------------------------------------------------------------------------------
    // Messages of a branch named by its xid

    /** Adds one message with a binary value (sent as value_base64) to the active branch xid. */
    public void publish(Xid xid, String topic, String key, byte[] value) throws XAException {
        Map<String, Object> m = message(topic, key);
        m.put("value_base64", Base64.getEncoder().encodeToString(value == null ? new byte[0] : value));
        publishMessages(xid, List.of(m));
    }

    /** Adds one message whose value is the JSON text {@code jsonValue} to the active branch xid. */
    public void publishJson(Xid xid, String topic, String key, String jsonValue) throws XAException {
        Map<String, Object> m = message(topic, key);
        try {
            m.put("value", new Json.Raw(jsonValue));
        } catch (IllegalArgumentException e) {
            throw invalid("the value is not JSON: " + e.getMessage());
        }
        publishMessages(xid, List.of(m));
    }

    /**
     * Adds messages, each a map in the API's message shape ("topic", "key", "value" or
     * "value_base64", "headers", "partition"), to the active branch xid.
     */
    public void publishMessages(Xid xid, List<Map<String, Object>> messages) throws XAException {
        if (messages == null || messages.isEmpty()) {
            throw invalid("publish needs at least one message");
        }
        Map<String, Object> body = xidBody(xid);
        body.put("messages", messages);
        post("/v1/xa/messages", body);
    }

    private static Map<String, Object> message(String topic, String key) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("topic", topic);
        if (key != null) {
            m.put("key", key);
        }
        return m;
    }

    // ---------------------------------------------------------------------------------------
    // HTTP

    private Map<String, Object> xidBody(Xid xid) throws XAException {
        if (xid == null) {
            throw invalid("the xid is null");
        }
        byte[] g = xid.getGlobalTransactionId();
        byte[] b = xid.getBranchQualifier();
        if (g == null || g.length < 1 || g.length > ImagoXid.MAX_PART
                || b == null || b.length < 1 || b.length > ImagoXid.MAX_PART) {
            throw invalid("the xid's gtrid and bqual must be 1 to " + ImagoXid.MAX_PART + " bytes each");
        }
        Map<String, Object> x = new LinkedHashMap<>();
        x.put("format_id", xid.getFormatId());
        x.put("gtrid", HexFormat.of().formatHex(g));
        x.put("bqual", HexFormat.of().formatHex(b));
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("xid", x);
        return body;
    }

    private static Xid parseXid(Object o) throws XAException {
        try {
            Map<?, ?> m = (Map<?, ?>) o;
            int format = ((Number) m.get("format_id")).intValue();
            return new ImagoXid(format, HexFormat.of().parseHex((String) m.get("gtrid")),
                    HexFormat.of().parseHex((String) m.get("bqual")));
        } catch (RuntimeException e) {
            throw new ImagoXAException(XAException.XAER_RMERR, 200, null,
                    "recover: the broker answered an xid this client cannot read: " + Json.write(o), e);
        }
    }

    private Answer post(String path, Map<String, Object> body) throws XAException {
        return send("POST", path, Json.write(body));
    }

    /**
     * A 2xx answer: its JSON object (empty when it had none), its status, and, when its body
     * was cut off, why (the JSON is empty then). A 2xx says the verb was done, whatever the body.
     */
    private record Answer(Map<String, Object> json, int status, IOException cut) {
    }

    /** What came back for one request: the status line and headers, and the body or why it was cut off. */
    private record Reply(int status, HttpHeaders headers, String body, IOException cut) {
    }

    /**
     * Sends one request and reads its answer. A 307 or 308 (a cluster follower with
     * {@code cluster.forward: redirect} sends every request to the leader) is followed with the
     * same method, body and headers, Authorization included, up to {@link #MAX_REDIRECTS} hops;
     * a loop, one hop too many, a redirect without Location or from https to http is
     * XAER_RMFAIL (the request was not acted on: retry later). The HttpClient is not asked to
     * follow redirects: it would turn a 301/302 POST into a GET, and some clients drop
     * Authorization on a redirect to another host or port. Other 3xx are not followed.
     *
     * <p>The status line decides: a 2xx whose body is cut off (the connection drops, or a read
     * fails, while it is read) is the verb's success, an {@link Answer} whose
     * {@code cut} says so; any other answer cut off is XAER_RMFAIL, as no answer is.
     */
    private Answer send(String method, String path, String body) throws XAException {
        String what = method + " " + path;
        URI uri = URI.create(baseUrl + path);
        Set<URI> visited = new HashSet<>();
        visited.add(uri);
        for (int hops = 0; ; hops++) {
            Reply resp = exchange(method, uri, body);
            int status = resp.status();
            if (resp.cut() != null) {
                if (status >= 200 && status < 300) {
                    return new Answer(new LinkedHashMap<>(), status, resp.cut());
                }
                throw new ImagoXAException(XAException.XAER_RMFAIL, status, null,
                        what + ": " + status + " from " + uri + ", its answer cut off: " + resp.cut(), resp.cut());
            }
            if (status == 307 || status == 308) {
                uri = redirectTarget(what, uri, resp, visited, hops);
                continue;
            }
            Map<String, Object> json = null;
            String text = resp.body() == null ? "" : resp.body();
            if (!text.isBlank()) {
                try {
                    json = Json.parseObject(text);
                } catch (IllegalArgumentException e) {
                    json = null;
                }
            }
            if (status >= 200 && status < 300) {
                return new Answer(json != null ? json : new LinkedHashMap<>(), status, null);
            }
            throw errorFor(what, reportsOutcome(path), status, json, text);
        }
    }

    /** How many 307/308 redirects one request follows. */
    static final int MAX_REDIRECTS = 5;

    private URI redirectTarget(String what, URI from, Reply resp, Set<URI> visited, int hops)
            throws XAException {
        int status = resp.status();
        String location = resp.headers().firstValue("Location").orElse(null);
        String problem = null;
        URI to = null;
        if (location == null || location.isBlank()) {
            problem = "a redirect without Location";
        } else {
            try {
                to = from.resolve(location.trim());
            } catch (IllegalArgumentException e) {
                problem = "a redirect to an invalid Location " + location;
            }
        }
        if (problem == null) {
            String scheme = to.getScheme() == null ? "" : to.getScheme().toLowerCase();
            if (!(scheme.equals("http") || scheme.equals("https")) || to.getHost() == null) {
                problem = "a redirect to " + to + ", not an http(s) URL";
            } else if (from.getScheme().equalsIgnoreCase("https") && scheme.equals("http")) {
                problem = "a redirect from https to " + to + " (the token would go in clear)";
            } else if (!visited.add(to)) {
                problem = "a redirect loop (" + to + " again)";
            } else if (hops + 1 > MAX_REDIRECTS) {
                problem = "more than " + MAX_REDIRECTS + " redirects";
            }
        }
        if (problem != null) {
            throw new ImagoXAException(XAException.XAER_RMFAIL, status, null,
                    what + ": " + status + " from " + from + ": " + problem + "; the request was not acted on", null);
        }
        return to;
    }

    /**
     * Sends one request. No status line is XAER_RMFAIL; a status line whose body could not be
     * read whole is a Reply with {@code cut} set (the handler sees the status before the body).
     */
    private Reply exchange(String method, URI uri, String body) throws XAException {
        HttpRequest.Builder rb = HttpRequest.newBuilder(uri)
                .timeout(requestTimeout)
                .header("Accept", "application/json");
        if (token != null) {
            rb.header("Authorization", "Bearer " + token);
        }
        if (body != null) {
            rb.header("Content-Type", "application/json");
            rb.method(method, HttpRequest.BodyPublishers.ofString(body, StandardCharsets.UTF_8));
        } else {
            rb.method(method, HttpRequest.BodyPublishers.noBody());
        }
        AtomicReference<HttpResponse.ResponseInfo> head = new AtomicReference<>();
        HttpResponse.BodyHandler<String> handler = info -> {
            head.set(info);
            return HttpResponse.BodySubscribers.ofString(StandardCharsets.UTF_8);
        };
        try {
            HttpResponse<String> resp = http.send(rb.build(), handler);
            return new Reply(resp.statusCode(), resp.headers(), resp.body(), null);
        } catch (IOException e) {
            HttpResponse.ResponseInfo info = head.get();
            if (info != null) {
                return new Reply(info.statusCode(), info.headers(), null, e);
            }
            throw new ImagoXAException(XAException.XAER_RMFAIL, 0, null,
                    method + " " + uri + ": no answer from the broker: " + e, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ImagoXAException(XAException.XAER_RMFAIL, 0, null,
                    method + " " + uri + ": interrupted while waiting for the broker", e);
        }
    }

    /**
     * The verbs whose error answer a transaction manager reads as news of the branch's outcome:
     * X/Open's XAER_RMERR from xa_commit says the branch's work was rolled back, from
     * xa_rollback that the resource manager may have forgotten the branch, from xa_forget that
     * it has not forgotten it, from xa_prepare that preparing failed. An answer that says none
     * of that (an error without an XA code: a 500 from a handler or a proxy, a refused token, no
     * such endpoint) must not claim it: for these verbs it is XAER_RMFAIL (resource manager
     * unavailable), and the manager retries. recover is among them: it decides nothing, but a
     * manager retries a scan that failed with XAER_RMFAIL.
     */
    static boolean reportsOutcome(String path) {
        switch (path) {
            case "/v1/xa/prepare":
            case "/v1/xa/commit":
            case "/v1/xa/rollback":
            case "/v1/xa/forget":
            case "/v1/xa/recover":
                return true;
            default:
                return false;
        }
    }

    /**
     * Maps an HTTP error answer to an XAException. The API's error.code, when it is an XA code,
     * is the answer. Otherwise: 502/503/504/429/408 and a redirect not followed are XAER_RMFAIL
     * (nothing was done here: retry later); 401/403, any other 5xx and a 404 with no such
     * endpoint are XAER_RMFAIL for a verb that {@linkplain #reportsOutcome reports an outcome}
     * and XAER_RMERR for start, end and publish (the branch is not prepared; the manager rolls
     * the transaction back); any other 4xx is XAER_INVAL.
     */
    static ImagoXAException errorFor(String what, boolean reportsOutcome, int status, Map<String, Object> json, String text) {
        String apiCode = null;
        String message = null;
        if (json != null && json.get("error") instanceof Map) {
            Map<?, ?> e = (Map<?, ?>) json.get("error");
            apiCode = e.get("code") instanceof String ? (String) e.get("code") : null;
            message = e.get("message") instanceof String ? (String) e.get("message") : null;
        }
        if (message == null) {
            message = text.length() > 200 ? text.substring(0, 200) + "..." : text;
        }
        Integer code = XACodes.code(apiCode);
        if (code == null) {
            if (status == 503 || status == 502 || status == 504 || status == 429 || status == 408
                    || (status >= 300 && status < 400)) {
                code = XAException.XAER_RMFAIL; // the resource manager cannot work now: retry later
            } else if (status == 401 || status == 403 || status >= 500
                    || (status == 404 && (apiCode == null || apiCode.equals("not_found")))) {
                // refused (auth), no XA endpoint there, or a server error: nothing says what
                // became of the branch, so never XAER_RMERR where that would claim an outcome
                code = reportsOutcome ? XAException.XAER_RMFAIL : XAException.XAER_RMERR;
            } else {
                code = XAException.XAER_INVAL; // a request the broker rejects (bad field, unknown topic, ...)
            }
        }
        return new ImagoXAException(code, status, apiCode,
                what + ": " + status + " " + (apiCode != null ? apiCode : XACodes.name(code)) + ": " + message, null);
    }

    private static ImagoXAException invalid(String message) {
        return new ImagoXAException(XAException.XAER_INVAL, 0, null, message, null);
    }

    @Override
    public String toString() {
        return "ImagoXAResource(" + baseUrl + ")";
    }
}
