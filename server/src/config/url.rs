//! URLs as etcd's flags take them: `scheme://host:port` and nothing more.

use std::fmt;
use std::str::FromStr;

/// The scheme of a client or peer URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Plain HTTP/2.
    Http,
    /// HTTP/2 over TLS.
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A URL given to `--listen-client-urls`, `--advertise-client-urls` and the
/// peer URL flags.
///
/// etcd takes only a scheme, a host and a port there: a path, a query or a
/// missing port is an error rather than something to guess about. An empty
/// host (`http://:2379`) means every interface, as in Go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Url {
    scheme: Scheme,
    /// Without the brackets of an IPv6 literal.
    host: String,
    port: u16,
}

/// Why a string is not a URL etcd's flags accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// No `scheme://` prefix.
    #[error("URL {0:?} has no scheme (expected http://host:port)")]
    NoScheme(String),
    /// A scheme other than http or https.
    #[error("URL scheme must be http or https, got {0:?}")]
    Scheme(String),
    /// A path, a query, a fragment or user info.
    #[error("URL {0:?} must be scheme://host:port with no path, query or user info")]
    Extra(String),
    /// No `:port`, or an IPv6 address without brackets.
    #[error("URL address {0:?} does not have the form \"host:port\"")]
    HostPort(String),
    /// The port is not a number in 0..=65535.
    #[error("URL {url:?} has an invalid port {port:?}")]
    Port {
        /// The whole URL.
        url: String,
        /// What stood where the port should be.
        port: String,
    },
}

impl Url {
    /// A URL from its parts.
    pub fn new(scheme: Scheme, host: impl Into<String>, port: u16) -> Self {
        Url {
            scheme,
            host: host.into(),
            port,
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host name or IP address, without IPv6 brackets; empty for "every
    /// interface".
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port; 0 asks the OS for a free one when listening.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `host:port` to hand to a resolver or a bind call.
    pub(crate) fn authority(&self) -> (String, u16) {
        let host = if self.host.is_empty() {
            "0.0.0.0".to_owned()
        } else {
            self.host.clone()
        };
        (host, self.port)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(
                f,
                "{}://[{}]:{}",
                self.scheme.as_str(),
                self.host,
                self.port
            )
        } else {
            write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
        }
    }
}

impl FromStr for Url {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| UrlError::NoScheme(s.to_owned()))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(UrlError::Scheme(scheme.to_owned())),
        };
        // Go's url.Parse keeps a lone trailing slash as the path "/", which
        // etcd tolerates; anything longer is a path it rejects.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace())
        {
            return Err(UrlError::Extra(s.to_owned()));
        }
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| UrlError::HostPort(rest.to_owned()))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| UrlError::HostPort(rest.to_owned()))?;
            (host, port)
        } else {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| UrlError::HostPort(rest.to_owned()))?;
            if host.contains(':') {
                return Err(UrlError::HostPort(rest.to_owned()));
            }
            (host, port)
        };
        let port = port.parse::<u16>().map_err(|_| UrlError::Port {
            url: s.to_owned(),
            port: port.to_owned(),
        })?;
        Ok(Url::new(scheme, host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let cases: &[(&str, Result<Url, UrlError>)] = &[
            (
                "http://127.0.0.1:2379",
                Ok(Url::new(Scheme::Http, "127.0.0.1", 2379)),
            ),
            (
                "HTTPS://example.com:443/",
                Ok(Url::new(Scheme::Https, "example.com", 443)),
            ),
            ("http://[::1]:0", Ok(Url::new(Scheme::Http, "::1", 0))),
            ("http://:2379", Ok(Url::new(Scheme::Http, "", 2379))),
            (
                "127.0.0.1:2379",
                Err(UrlError::NoScheme("127.0.0.1:2379".into())),
            ),
            ("unix://sock:1", Err(UrlError::Scheme("unix".into()))),
            (
                "http://127.0.0.1",
                Err(UrlError::HostPort("127.0.0.1".into())),
            ),
            ("http://::1:80", Err(UrlError::HostPort("::1:80".into()))),
            (
                "http://a:2379/v3",
                Err(UrlError::Extra("http://a:2379/v3".into())),
            ),
            (
                "http://u@a:2379",
                Err(UrlError::Extra("http://u@a:2379".into())),
            ),
            (
                "http://a:65536",
                Err(UrlError::Port {
                    url: "http://a:65536".into(),
                    port: "65536".into(),
                }),
            ),
            (
                "http://a:",
                Err(UrlError::Port {
                    url: "http://a:".into(),
                    port: String::new(),
                }),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&input.parse::<Url>(), want, "{input}");
        }
    }

    #[test]
    fn displays_round_trip() {
        for s in ["http://127.0.0.1:2379", "https://[::1]:2380", "http://:1"] {
            let url: Url = s.parse().expect("test input is valid");
            assert_eq!(url.to_string(), s);
        }
    }
}
