package io.imago.xa;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import javax.transaction.xa.XAException;
import javax.transaction.xa.XAResource;

/**
 * The XA error codes by name, as the HTTP API spells them in {@code error.code} (the XA
 * resource endpoints, /v1/xa/*) and as {@link XAException} numbers them, in both directions.
 */
public final class XACodes {
    private XACodes() {}

    private static final Map<String, Integer> BY_NAME;

    static {
        Map<String, Integer> m = new LinkedHashMap<>();
        m.put("XA_RBROLLBACK", XAException.XA_RBROLLBACK);
        m.put("XA_RBCOMMFAIL", XAException.XA_RBCOMMFAIL);
        m.put("XA_RBDEADLOCK", XAException.XA_RBDEADLOCK);
        m.put("XA_RBINTEGRITY", XAException.XA_RBINTEGRITY);
        m.put("XA_RBOTHER", XAException.XA_RBOTHER);
        m.put("XA_RBPROTO", XAException.XA_RBPROTO);
        m.put("XA_RBTIMEOUT", XAException.XA_RBTIMEOUT);
        m.put("XA_RBTRANSIENT", XAException.XA_RBTRANSIENT);
        m.put("XA_NOMIGRATE", XAException.XA_NOMIGRATE);
        m.put("XA_HEURHAZ", XAException.XA_HEURHAZ);
        m.put("XA_HEURCOM", XAException.XA_HEURCOM);
        m.put("XA_HEURRB", XAException.XA_HEURRB);
        m.put("XA_HEURMIX", XAException.XA_HEURMIX);
        m.put("XA_RETRY", XAException.XA_RETRY);
        m.put("XA_RDONLY", XAException.XA_RDONLY);
        m.put("XAER_ASYNC", XAException.XAER_ASYNC);
        m.put("XAER_RMERR", XAException.XAER_RMERR);
        m.put("XAER_NOTA", XAException.XAER_NOTA);
        m.put("XAER_INVAL", XAException.XAER_INVAL);
        m.put("XAER_PROTO", XAException.XAER_PROTO);
        m.put("XAER_RMFAIL", XAException.XAER_RMFAIL);
        m.put("XAER_DUPID", XAException.XAER_DUPID);
        m.put("XAER_OUTSIDE", XAException.XAER_OUTSIDE);
        BY_NAME = Collections.unmodifiableMap(m);
    }

    /** The XAException code for an API error code, or null when the name is not an XA code. */
    public static Integer code(String name) {
        return name == null ? null : BY_NAME.get(name);
    }

    /** The name of an XAException code ("XAER_NOTA"); "XA_OK" for 0; the number when unknown. */
    public static String name(int code) {
        if (code == XAResource.XA_OK) {
            return "XA_OK";
        }
        for (Map.Entry<String, Integer> e : BY_NAME.entrySet()) {
            if (e.getValue() == code) {
                return e.getKey();
            }
        }
        return "XA(" + code + ")";
    }
}
