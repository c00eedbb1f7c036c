//! Trusting the API server's front proxy. The aggregation layer proxies a request for
//! `discovery.tenantry.dev` to the discovery server with a client certificate of the
//! front-proxy CA and the caller in headers (X-Remote-User, X-Remote-Group). Those headers
//! mean something only on a connection whose certificate that CA signed, for one of the
//! allowed names: anyone else could write them. The API server publishes the CA, the
//! names and the header names in `kube-system/extension-apiserver-authentication`.
//!
//! The TLS layer refuses every connection without such a certificate (checked with the
//! CA, then the name): a request that reaches a handler came through the API server,
//! which authenticated and authorized the caller.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};

/// Where the API server publishes how it authenticates to aggregated servers.
pub const CONFIG_MAP_NAMESPACE: &str = "kube-system";
pub const CONFIG_MAP: &str = "extension-apiserver-authentication";

/// What the API server's front proxy presents and sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontProxy {
    /// PEM: the CA that signs the front proxy's client certificate.
    pub ca: String,
    /// The common names a front-proxy certificate may have (empty: any the CA signed).
    pub allowed_names: Vec<String>,
    /// Headers carrying the user name (the first present wins) and the groups.
    pub user_headers: Vec<String>,
    pub group_headers: Vec<String>,
}

/// Why the front proxy cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "{CONFIG_MAP_NAMESPACE}/{CONFIG_MAP} has no requestheader-client-ca-file: the API server runs without --requestheader-client-ca-file (the aggregation layer is not set up)"
    )]
    NoFrontProxy,
    #[error("{CONFIG_MAP_NAMESPACE}/{CONFIG_MAP}: {0} is not a JSON list of strings")]
    BadList(&'static str),
    #[error("reading {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP}: {0}")]
    Read(#[from] kube::Error),
    #[error("TLS: {0}")]
    Tls(String),
}

impl FrontProxy {
    /// Pure: the front proxy described by the ConfigMap's data.
    pub fn from_config_map(cm: &ConfigMap) -> Result<Self, TrustError> {
        let data = cm.data.clone().unwrap_or_default();
        let ca = data
            .get("requestheader-client-ca-file")
            .filter(|ca| !ca.trim().is_empty())
            .ok_or(TrustError::NoFrontProxy)?
            .clone();
        let list = |key: &'static str, default: &[&str]| -> Result<Vec<String>, TrustError> {
            match data.get(key) {
                None => Ok(default.iter().map(|s| s.to_string()).collect()),
                Some(v) => {
                    serde_json::from_str::<Vec<String>>(v).map_err(|_| TrustError::BadList(key))
                }
            }
        };
        Ok(Self {
            ca,
            allowed_names: list("requestheader-allowed-names", &[])?,
            user_headers: list("requestheader-username-headers", &["X-Remote-User"])?,
            group_headers: list("requestheader-group-headers", &["X-Remote-Group"])?,
        })
    }

    /// Reads it from the cluster (`get` on that one ConfigMap: the role
    /// `extension-apiserver-authentication-reader` in kube-system grants it).
    pub async fn read(client: &Client) -> Result<Self, TrustError> {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), CONFIG_MAP_NAMESPACE);
        Self::from_config_map(&api.get(CONFIG_MAP).await?)
    }

    /// The TLS server: `cert`/`key` (PEM) as its certificate, and only front-proxy clients.
    pub fn server_config(&self, cert: &[u8], key: &[u8]) -> Result<ServerConfig, TrustError> {
        let tls = |e: &dyn std::fmt::Display| TrustError::Tls(e.to_string());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = self.client_verifier(provider.clone())?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|e| tls(&e))?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| tls(&e))?;
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| tls(&e))
    }
}

impl FrontProxy {
    /// The check of a client: a certificate of the front-proxy CA with an allowed name.
    fn client_verifier(
        &self,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Arc<dyn ClientCertVerifier>, TrustError> {
        let tls = |e: &dyn std::fmt::Display| TrustError::Tls(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.ca.as_bytes()) {
            roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
        }
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| tls(&e))?;
        Ok(Arc::new(AllowedNames {
            inner,
            names: self.allowed_names.clone(),
        }))
    }
}

/// The common name of a certificate (DER), if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// A client verifier: the chain must lead to the front-proxy CA (`inner`), and the
/// certificate's common name must be one of `names` (when there are any), as the API
/// server itself checks a request-header client.
#[derive(Debug)]
struct AllowedNames {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl ClientCertVerifier for AllowedNames {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.names.is_empty() {
            return Ok(verified);
        }
        match common_name(end_entity) {
            Some(cn) if self.names.contains(&cn) => Ok(verified),
            _ => Err(rustls::Error::General(
                "the client certificate's common name is not an allowed front-proxy name".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(yaml: &str) -> ConfigMap {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn the_front_proxy_is_read_from_the_api_servers_config_map() {
        let fp = FrontProxy::from_config_map(&cm(r#"
metadata: {name: extension-apiserver-authentication, namespace: kube-system}
data:
  client-ca-file: "not this one"
  requestheader-client-ca-file: "-----BEGIN CERTIFICATE-----"
  requestheader-allowed-names: '["front-proxy-client"]'
  requestheader-username-headers: '["X-Remote-User"]'
  requestheader-group-headers: '["X-Remote-Group"]'
  requestheader-extra-headers-prefix: '["X-Remote-Extra-"]'
"#))
        .unwrap();
        assert_eq!(fp.ca, "-----BEGIN CERTIFICATE-----");
        assert_eq!(fp.allowed_names, vec!["front-proxy-client"]);
        assert_eq!(fp.user_headers, vec!["X-Remote-User"]);
        // Without the front proxy (no aggregation layer), nothing is trusted.
        let none = cm("metadata: {name: x}\ndata: {client-ca-file: abc}\n");
        assert!(matches!(
            FrontProxy::from_config_map(&none),
            Err(TrustError::NoFrontProxy)
        ));
        let bad = cm(
            "metadata: {name: x}\ndata: {requestheader-client-ca-file: abc, requestheader-allowed-names: 'front'}\n",
        );
        assert!(matches!(
            FrontProxy::from_config_map(&bad),
            Err(TrustError::BadList(_))
        ));
    }

    /// A CA and a client certificate it signed for `cn`.
    fn ca_and_client(cn: &str) -> (String, CertificateDer<'static>) {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-ca");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut client = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = client.signed_by(&key, &issuer).unwrap();
        (ca_cert.pem(), cert.der().clone())
    }

    #[test]
    fn only_the_front_proxy_ca_with_an_allowed_name_is_trusted() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let now = UnixTime::now();
        let (ca, proxy) = ca_and_client("front-proxy-client");
        let front = |ca: &str, names: &[&str]| FrontProxy {
            ca: ca.into(),
            allowed_names: names.iter().map(|n| n.to_string()).collect(),
            user_headers: vec![],
            group_headers: vec![],
        };
        let v = front(&ca, &["front-proxy-client"])
            .client_verifier(provider.clone())
            .unwrap();
        assert!(v.client_auth_mandatory());
        assert!(v.verify_client_cert(&proxy, &[], now).is_ok());
        // Another name from the same CA: refused (empty list: any name of the CA).
        let (ca2, other) = ca_and_client("someone-else");
        let v2 = front(&ca2, &["front-proxy-client"])
            .client_verifier(provider.clone())
            .unwrap();
        assert!(v2.verify_client_cert(&other, &[], now).is_err());
        let any = front(&ca2, &[]).client_verifier(provider.clone()).unwrap();
        assert!(any.verify_client_cert(&other, &[], now).is_ok());
        // The right name from another CA: refused.
        assert!(v.verify_client_cert(&other, &[], now).is_err());
        assert!(v2.verify_client_cert(&proxy, &[], now).is_err());
    }

    #[test]
    fn the_common_name_is_read_from_a_certificate() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-client");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            common_name(cert.der()).as_deref(),
            Some("front-proxy-client")
        );
        assert_eq!(common_name(b"not a certificate"), None);
    }
}
