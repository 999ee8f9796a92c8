//! TLS to workspace databases, with libpq's `sslmode` semantics: the modes
//! users know from psql, over rustls. tokio-postgres itself knows only
//! `disable`, `prefer` and `require`; the verification is decided here.
//!
//! | sslmode       | encrypts        | verifies the chain | verifies the name |
//! |---------------|-----------------|--------------------|-------------------|
//! | `disable`     | no              | -                  | -                 |
//! | `prefer`      | if offered      | no                 | no                |
//! | `require`     | yes             | only with a CA     | no                |
//! | `verify-ca`   | yes             | yes                | no                |
//! | `verify-full` | yes             | yes                | yes               |
//!
//! The chain is checked against `Workspace.spec.database.caSecretRef`
//! (CloudNativePG's `<cluster>-ca`), or the public web roots without one.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(format!("sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full")),
        })
    }

    /// What tokio-postgres is told: it only negotiates; rustls verifies.
    fn negotiation(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            _ => "require",
        }
    }
}

/// Takes `sslmode` out of a libpq URI (`?sslmode=`) or key/value string
/// (`sslmode=`), and returns the string with the mode tokio-postgres
/// understands in its place, and the mode itself (`prefer` when absent, as
/// in libpq).
pub fn split_sslmode(conninfo: &str) -> Result<(String, SslMode), String> {
    let is_uri = conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://");
    let mut mode = SslMode::Prefer;
    if is_uri {
        let Some((base, query)) = conninfo.split_once('?') else { return Ok((conninfo.to_owned(), mode)) };
        let mut params = Vec::new();
        for param in query.split('&') {
            match param.split_once('=') {
                Some(("sslmode", value)) => {
                    mode = SslMode::parse(value)?;
                    params.push(format!("sslmode={}", mode.negotiation()));
                }
                _ => params.push(param.to_owned()),
            }
        }
        return Ok((format!("{base}?{}", params.join("&")), mode));
    }
    let mut words = Vec::new();
    for word in conninfo.split_whitespace() {
        match word.split_once('=') {
            Some(("sslmode", value)) => {
                mode = SslMode::parse(value.trim_matches('\''))?;
                words.push(format!("sslmode={}", mode.negotiation()));
            }
            _ => words.push(word.to_owned()),
        }
    }
    Ok((words.join(" "), mode))
}

/// The rustls connector for a mode and an optional PEM bundle of CAs.
pub fn connector(mode: SslMode, ca_pem: Option<&[u8]>) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|_| "the CA Secret's certificate is not valid PEM".to_owned())?;
                roots.add(cert).map_err(|e| format!("the CA Secret's certificate cannot be used: {e}"))?;
            }
            if roots.is_empty() {
                return Err("the CA Secret's key holds no PEM certificate".into());
            }
            roots
        }
        None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
    };
    let webpki = || {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
            .build()
            .map_err(|e| format!("TLS verifier: {e}"))
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, ca_pem.is_some()) {
        (SslMode::VerifyFull, _) => webpki()?,
        (SslMode::VerifyCa, _) | (SslMode::Require, true) => Arc::new(ChainOnly(webpki()?)),
        _ => Arc::new(Unverified(provider.signature_verification_algorithms)),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `prefer` and `require` without a CA: encrypted, not authenticated, as
/// libpq does. The handshake's signatures are still checked.
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the name is not
/// checked. webpki checks the chain before the name, so a name error means
/// the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_from_uris_and_key_values() {
        let (uri, mode) = split_sslmode("postgresql://u:p@db:5432/x?application_name=a&sslmode=verify-full").unwrap();
        assert_eq!((uri.as_str(), mode), ("postgresql://u:p@db:5432/x?application_name=a&sslmode=require", SslMode::VerifyFull));
        let (uri, mode) = split_sslmode("postgresql://u:p@db/x").unwrap();
        assert_eq!((uri.as_str(), mode), ("postgresql://u:p@db/x", SslMode::Prefer));
        let (kv, mode) = split_sslmode("host=db sslmode=verify-ca dbname=x").unwrap();
        assert_eq!((kv.as_str(), mode), ("host=db sslmode=require dbname=x", SslMode::VerifyCa));
        assert_eq!(split_sslmode("postgres://db/x?sslmode=disable").unwrap().1, SslMode::Disable);
        assert!(split_sslmode("postgres://db/x?sslmode=sometimes").is_err());
    }

    #[test]
    fn a_ca_that_is_not_pem_is_refused() {
        assert!(connector(SslMode::VerifyFull, Some(b"not a certificate")).is_err());
        assert!(connector(SslMode::VerifyFull, None).is_ok());
        assert!(connector(SslMode::Prefer, None).is_ok());
    }
}
