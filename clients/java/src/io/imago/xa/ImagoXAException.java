package io.imago.xa;

import javax.transaction.xa.XAException;

/**
 * An {@link XAException} from Imago, keeping what the server said: the HTTP status (0 when no
 * answer came) and the API's error code (an XA code such as "XAER_NOTA", or another API code
 * such as "unknown_topic"). {@link #errorCode} holds the XAException number.
 */
public final class ImagoXAException extends XAException {
    private static final long serialVersionUID = 1L;

    private final int httpStatus;
    private final String apiCode;

    public ImagoXAException(int errorCode, int httpStatus, String apiCode, String message, Throwable cause) {
        super(message);
        this.errorCode = errorCode;
        this.httpStatus = httpStatus;
        this.apiCode = apiCode;
        if (cause != null) {
            initCause(cause);
        }
    }

    /** The HTTP status of the answer, or 0 when the request got none (network failure). */
    public int httpStatus() {
        return httpStatus;
    }

    /** The API error code of the answer ({@code error.code}), or null when there was none. */
    public String apiCode() {
        return apiCode;
    }
}
