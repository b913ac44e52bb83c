import bitronix.tm.internal.BitronixRuntimeException;
import bitronix.tm.internal.XAResourceHolderState;
import bitronix.tm.recovery.RecoveryException;
import bitronix.tm.resource.ResourceObjectFactory;
import bitronix.tm.resource.ResourceRegistrar;
import bitronix.tm.resource.common.RecoveryXAResourceHolder;
import bitronix.tm.resource.common.ResourceBean;
import bitronix.tm.resource.common.XAResourceHolder;
import bitronix.tm.resource.common.XAResourceProducer;
import bitronix.tm.resource.common.XAStatefulHolder;
import io.imago.xa.ImagoXAResource;
import javax.naming.Reference;
import javax.naming.StringRefAddr;
import javax.transaction.Transaction;
import javax.transaction.TransactionManager;
import javax.transaction.xa.XAResource;

/**
 * Imago as a Bitronix resource: the generic {@link XAResourceProducer} registration, done once
 * per broker URL at start-up, the way Bitronix's {@code PoolingDataSource} registers a database.
 *
 * <pre>{@code
 * ImagoXAResource imago = ImagoXAResource.builder("http://imago:8080")
 *         .enlister(ImagoXAResourceProducer.enlister(TransactionManagerServices::getTransactionManager))
 *         .build();
 * ImagoXAResourceProducer.register("imago", imago);   // before or after the manager starts
 * }</pre>
 *
 * What the registration gives Bitronix:
 * <ul>
 *   <li>enlistment: Bitronix accepts only resources a registered producer knows
 *       ({@link #findXAResourceHolder}); the enlister above enlists the resource in the calling
 *       thread's transaction the first time it publishes in it;
 *   <li>recovery: Bitronix's recoverer (at start-up, then every
 *       {@code backgroundRecoveryIntervalSeconds}) asks every producer for a resource
 *       ({@link #startRecovery}), calls {@code recover()} on it and commits the branches its
 *       journal decided to commit, rolling back the others of its own;
 *   <li>the transaction timeout: {@code applyTransactionTimeout} is on, so each branch gets the
 *       transaction's remaining time as its broker timeout (the broker's default is 30 s, shorter
 *       than Bitronix's default of 60 s).
 * </ul>
 *
 * <p>One producer per broker URL, each with its own unique name; the name is written in
 * Bitronix's journal for every transaction the broker took part in, so it must stay the same
 * across restarts or recovery will not find the broker's branches.
 */
public final class ImagoXAResourceProducer extends ResourceBean implements XAResourceProducer {
    private static final long serialVersionUID = 1L;

    private final transient ImagoXAResourceHolder holder;
    private transient volatile RecoveryXAResourceHolder recovering;

    private ImagoXAResourceProducer(String uniqueName, ImagoXAResource resource) {
        setUniqueName(uniqueName);
        setApplyTransactionTimeout(true);
        setUseTmJoin(true); // a second enlistment in one transaction joins the branch (same broker)
        this.holder = new ImagoXAResourceHolder(resource, this);
    }

    /**
     * Registers {@code resource} with Bitronix under {@code uniqueName}. When the manager already
     * runs, Bitronix recovers the broker's branches at once.
     */
    public static ImagoXAResourceProducer register(String uniqueName, ImagoXAResource resource) {
        ImagoXAResourceProducer p = new ImagoXAResourceProducer(uniqueName, resource);
        p.init();
        return p;
    }

    /**
     * The enlister for {@link ImagoXAResource.Builder#enlister}: it enlists the resource in the
     * calling thread's JTA transaction, if there is one. Plain JTA, nothing of Bitronix: the
     * same works under any manager that implements {@code javax.transaction.TransactionManager}.
     */
    public static ImagoXAResource.Enlister enlister(java.util.function.Supplier<TransactionManager> tm) {
        return resource -> {
            Transaction tx = tm.get().getTransaction();
            return tx != null && tx.enlistResource(resource);
        };
    }

    @Override
    public XAResourceHolderState startRecovery() throws RecoveryException {
        if (recovering != null) {
            throw new RecoveryException("recovery already in progress on " + this);
        }
        recovering = new RecoveryXAResourceHolder(holder);
        return new XAResourceHolderState(recovering, this);
    }

    @Override
    public void endRecovery() {
        recovering = null;
    }

    @Override
    public void setFailed(boolean failed) {
        // nothing to evict: every call is its own HTTP request, and one that fails says so
        // (XAER_RMFAIL) without leaving a broken connection behind
    }

    @Override
    public XAResourceHolder findXAResourceHolder(XAResource xaResource) {
        return xaResource == holder.getXAResource() ? holder : null;
    }

    @Override
    public void init() {
        try {
            ResourceRegistrar.register(this);
        } catch (RecoveryException e) {
            throw new BitronixRuntimeException("recover " + this, e);
        }
    }

    @Override
    public void close() {
        ResourceRegistrar.unregister(this);
    }

    @Override
    public XAStatefulHolder createPooledConnection(Object xaFactory, ResourceBean bean) {
        throw new UnsupportedOperationException("Imago has no connections to pool: one resource serves every thread");
    }

    @Override
    public Reference getReference() {
        return new Reference(ImagoXAResourceProducer.class.getName(),
                new StringRefAddr("uniqueName", getUniqueName()), ResourceObjectFactory.class.getName(), null);
    }

    @Override
    public String toString() {
        return "ImagoXAResourceProducer(" + getUniqueName() + ", " + holder.getXAResource() + ")";
    }
}
