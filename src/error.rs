//! Errors of the controller. A bad spec is never an error: it is a condition on the
//! object. Errors are what a retry may fix.

/// A failure while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed while {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("serializing {what}: {source}")]
    Serialize {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0} has no name or namespace")]
    MissingKey(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("generating a secret: {0}")]
    Random(String),
    /// The API server refused an object Tenantry built from validated input: a bug to
    /// report, retried in case it was a passing state of the cluster.
    #[error("{0}")]
    Refused(String),
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 409 => "conflict",
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 403 => "forbidden",
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 404 => "not_found",
            Error::Kube { .. } => "api",
            Error::Serialize { .. } => "serialize",
            Error::MissingKey(_) => "missing_key",
            Error::Finalizer(_) => "finalizer",
            Error::Random(_) => "random",
            Error::Refused(_) => "refused",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to a kube error.
pub trait Context<T> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for Result<T, kube::Error> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Kube {
            action: action(),
            source,
        })
    }
}
