//! The one error type of a reconcile.

/// A reconcile that failed against the Kubernetes API, or a deletion that
/// must wait. Database and spec problems are not errors here: they are
/// reported in status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A cleanup that cannot complete yet; the reason is in status.
    #[error("{0}")]
    Held(crate::api::Failure),
}

impl Error {
    /// The finalizer was added by an earlier reconcile whose update the store
    /// has not seen yet, so the patch's test failed. Not a failure: the watch
    /// event is on its way.
    pub fn is_finalizer_race(&self) -> bool {
        matches!(
            self,
            Error::Finalizer(inner) if matches!(
                inner.as_ref(),
                kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(status))
                    | kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status)) if status.code == 422
            )
        )
    }
}
