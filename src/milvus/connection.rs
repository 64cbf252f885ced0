//! Reaching a Milvus server: its address and token, the check that something listens
//! there, and the SDK's client on a runtime of its own, so the rest of lookalike stays
//! blocking.

use std::time::Duration;

use milvus::v2::prelude::{ClientV2, ConnectConfig, HasCollectionRequest, RetryConfig};

use crate::error::{Error, Result};

/// Where a Milvus server listens and how to log in.
#[derive(Clone)]
pub struct Server {
    /// `http://host:19530` (Milvus standalone or cluster, or `python -m milvus_lite server`).
    pub uri: String,
    /// `user:password` or an API key, where the server wants one.
    pub token: Option<String>,
    /// The database; the server's default when `None`.
    pub database: Option<String>,
    /// How long one request may take, connecting included (default 60 s).
    pub timeout: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret.
        f.debug_struct("Server")
            .field("uri", &self.uri)
            .field("token", &self.token.as_ref().map(|_| "[hidden]"))
            .field("database", &self.database)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Server {
    /// The server at `uri`, without a token, in its default database.
    pub fn new(uri: impl Into<String>) -> Self {
        Self { uri: uri.into(), token: None, database: None, timeout: Duration::from_secs(60) }
    }

    /// The same server, logging in with `token`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

/// A connection: the runtime that drives the SDK and the client.
pub(crate) struct Connection {
    pub runtime: tokio::runtime::Runtime,
    pub client: ClientV2,
    pub uri: String,
}

/// The SDK's error in a line: a gRPC status as its code and message, not its debug form.
fn reason(e: &milvus::v2::error::Error) -> String {
    match e {
        milvus::v2::error::Error::Grpc(status) => format!("gRPC {:?}: {}", status.code(), status.message()),
        other => other.to_string(),
    }
}

/// Checks `uri` and, where it names a port, that something listens there: a refused
/// connection or an unknown host is said at once, where the SDK would wait out its connect
/// timeout (it waits for a server that is starting).
fn preflight(uri: &str, timeout: Duration) -> Result<()> {
    let bad = |why: String| {
        Error::InvalidArgument(format!(
            "Milvus URI {uri:?}: {why}; write http://HOST:PORT (https:// for TLS), e.g. http://127.0.0.1:19530"
        ))
    };
    let Some((scheme, rest)) = uri.split_once("://") else { return Err(bad("no scheme".into())) };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https" | "tcp" | "grpc") {
        return Err(bad(format!("scheme {scheme:?}")));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal without a port ends in `]`.
        Some((host, port)) if !port.ends_with(']') => (host, Some(port)),
        _ => (authority, None),
    };
    if host.is_empty() {
        return Err(bad("no host".into()));
    }
    let Some(port) = port else { return Ok(()) };
    let port: u16 = port.parse().map_err(|_| bad(format!("port {port:?}")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let unreachable = |why: String| Error::Milvus {
        uri: uri.to_string(),
        action: "connect".into(),
        reason: format!("{why}: is a Milvus server running there?"),
    };
    let addresses: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| unreachable(format!("cannot resolve {host} ({e})")))?
        .collect();
    let mut last = None;
    for address in &addresses {
        match std::net::TcpStream::connect_timeout(address, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(unreachable(match last {
        Some(e) => format!("nothing answers at {host}:{port} ({e})"),
        None => format!("{host} has no address"),
    }))
}

impl Connection {
    pub fn open(server: &Server) -> Result<Self> {
        preflight(&server.uri, server.timeout.min(Duration::from_secs(10)))?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
            Error::Milvus { uri: server.uri.clone(), action: "start a runtime".into(), reason: e.to_string() }
        })?;
        let mut config = ConnectConfig::new()
            .uri(server.uri.clone())
            .connect_timeout(server.timeout.min(Duration::from_secs(10)))
            .rpc_timeout(server.timeout)
            // A stopped server answers at once; a retry loop would only hide it.
            .retry(RetryConfig::new().max_attempts(2));
        if let Some(token) = &server.token {
            config = config.token(token.clone());
        }
        if let Some(database) = &server.database {
            config = config.database(database.clone());
        }
        let client = runtime.block_on(ClientV2::new(&config)).map_err(|e| Error::Milvus {
            uri: server.uri.clone(),
            action: "connect".into(),
            reason: format!("{} (is a Milvus server listening there?)", reason(&e)),
        })?;
        Ok(Self { runtime, client, uri: server.uri.clone() })
    }

    pub fn fail(&self, action: impl Into<String>) -> impl FnOnce(milvus::v2::error::Error) -> Error + '_ {
        let action = action.into();
        move |e| Error::Milvus { uri: self.uri.clone(), action, reason: reason(&e) }
    }

    pub fn exists(&self, name: &str) -> Result<bool> {
        let request =
            HasCollectionRequest::builder().collection_name(name).build().map_err(self.fail("ask for a collection"))?;
        let found = self
            .runtime
            .block_on(self.client.has_collection(request))
            .map_err(self.fail(format!("look for collection `{name}`")))?;
        Ok(found.exists())
    }
}
