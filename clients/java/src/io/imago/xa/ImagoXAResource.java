package io.imago.xa;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.transaction.xa.XAException;
import javax.transaction.xa.XAResource;
import javax.transaction.xa.Xid;

/**
 * Imago's broker as a {@link XAResource}, over the HTTP API (shared/API.md, "XA resource"), with
 * nothing beyond the JDK.
 *
 * <p>A transaction manager enlists it like a database's resource: {@code start}, then
 * {@link #publish} the branch's messages (they stay invisible), {@code end}, {@code prepare}
 * (the broker fsyncs the branch; it votes {@code XA_RDONLY} when the branch holds no message),
 * then {@code commit} or {@code rollback}. After a crash {@code recover} lists every prepared,
 * undecided branch and every heuristically completed one; {@code forget} clears the latter.
 *
 * <p>Errors are {@link ImagoXAException}s (an {@link XAException}) whose {@code errorCode} is the
 * XA code the server answered ({@code XAER_NOTA}, {@code XAER_PROTO}, {@code XAER_DUPID},
 * {@code XA_RBROLLBACK}, {@code XA_HEURCOM}, ...); a request that gets no answer, or a 503, is
 * {@code XAER_RMFAIL}, so a transaction manager retries it later.
 *
 * <p>Instances are thread-safe and cheap; all instances with the same base URL talk to the same
 * resource manager ({@link #isSameRM}).
 */
public final class ImagoXAResource implements XAResource {
    /** The default time one HTTP request may take. */
    public static final Duration DEFAULT_REQUEST_TIMEOUT = Duration.ofSeconds(30);

    private final String baseUrl;
    private final String token;
    private final HttpClient http;
    private final Duration requestTimeout;

    private volatile int timeoutSeconds; // 0: the broker's default
    private boolean scanning; // a recover scan is open (guarded by this)

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
        this.http = b.http != null ? b.http
                : HttpClient.newBuilder()
                        .version(HttpClient.Version.HTTP_1_1)
                        .connectTimeout(b.connectTimeout)
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

        private Builder(String baseUrl) {
            this.baseUrl = baseUrl;
        }

        /** The bearer token to send; null or empty for none (the default). */
        public Builder token(String token) {
            this.token = token == null || token.isEmpty() ? null : token;
            return this;
        }

        /** The HttpClient to use (default: a new HTTP/1.1 client). */
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

    @Override
    public void start(Xid xid, int flags) throws XAException {
        Map<String, Object> body = xidBody(xid);
        switch (flags) {
            case TMNOFLAGS:
                body.put("flags", "noflags");
                int t = timeoutSeconds;
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
        post("/v1/xa/start", body);
    }

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
        post("/v1/xa/end", body);
    }

    /** Prepares the branch: {@code XA_OK}, or {@code XA_RDONLY} when it holds no message (no phase 2 then). */
    @Override
    public int prepare(Xid xid) throws XAException {
        Map<String, Object> out = post("/v1/xa/prepare", xidBody(xid));
        Object vote = out.get("vote");
        if ("ok".equals(vote)) {
            return XA_OK;
        }
        if ("rdonly".equals(vote)) {
            return XA_RDONLY;
        }
        throw new ImagoXAException(XAException.XAER_RMERR, 200, null,
                "prepare " + xid + ": the broker answered vote " + vote + ", want ok or rdonly", null);
    }

    @Override
    public void commit(Xid xid, boolean onePhase) throws XAException {
        commitWithOffsets(xid, onePhase);
    }

    /**
     * Commits like {@link #commit} and returns where the branch's messages were stored, each a
     * map with "topic", "partition" and "offset", in the order they were published.
     */
    public List<Map<String, Object>> commitWithOffsets(Xid xid, boolean onePhase) throws XAException {
        Map<String, Object> body = xidBody(xid);
        body.put("one_phase", onePhase);
        Map<String, Object> out = post("/v1/xa/commit", body);
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
        post("/v1/xa/rollback", xidBody(xid));
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
        Map<String, Object> out = send("GET", "/v1/xa/recover", null);
        List<Xid> xids = new ArrayList<>();
        if (out.get("xids") instanceof List) {
            for (Object o : (List<?>) out.get("xids")) {
                xids.add(parseXid(o));
            }
        }
        return xids.toArray(new Xid[0]);
    }

    /** Same resource manager: another ImagoXAResource for the same base URL. */
    @Override
    public boolean isSameRM(XAResource other) {
        return other instanceof ImagoXAResource && ((ImagoXAResource) other).baseUrl.equals(baseUrl);
    }

    /** The timeout that {@code start(TMNOFLAGS)} sends; 0 means the broker's default (30 s). */
    @Override
    public boolean setTransactionTimeout(int seconds) throws XAException {
        if (seconds < 0) {
            throw invalid("the transaction timeout must not be negative, got " + seconds);
        }
        timeoutSeconds = seconds;
        return true;
    }

    @Override
    public int getTransactionTimeout() {
        return timeoutSeconds;
    }

    // ---------------------------------------------------------------------------------------
    // Messages of a branch

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

    private Map<String, Object> post(String path, Map<String, Object> body) throws XAException {
        return send("POST", path, Json.write(body));
    }

    private Map<String, Object> send(String method, String path, String body) throws XAException {
        HttpRequest.Builder rb = HttpRequest.newBuilder(URI.create(baseUrl + path))
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
        HttpResponse<String> resp;
        try {
            resp = http.send(rb.build(), HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new ImagoXAException(XAException.XAER_RMFAIL, 0, null,
                    method + " " + baseUrl + path + ": no answer from the broker: " + e, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ImagoXAException(XAException.XAER_RMFAIL, 0, null,
                    method + " " + baseUrl + path + ": interrupted while waiting for the broker", e);
        }
        int status = resp.statusCode();
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
            return json != null ? json : new LinkedHashMap<>();
        }
        throw errorFor(method + " " + path, status, json, text);
    }

    /** Maps an HTTP error answer to an XAException (shared/API.md: error.code carries the XA code). */
    static ImagoXAException errorFor(String what, int status, Map<String, Object> json, String text) {
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
            if (status == 503 || status == 502 || status == 504 || status == 429) {
                code = XAException.XAER_RMFAIL; // the resource manager cannot work now: retry later
            } else if (status == 401 || status == 403 || status >= 500
                    || (status == 404 && (apiCode == null || apiCode.equals("not_found")))) {
                code = XAException.XAER_RMERR; // refused (auth), no XA endpoint there, or a server error
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
