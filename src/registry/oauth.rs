//! The OAuth2 refresh-token exchange of the distribution token spec
//! (<https://distribution.github.io/distribution/spec/auth/oauth/>), for docker's
//! `identitytoken`. `oci-client` 0.18 sends a `RegistryAuth::Bearer` to the registry as it is,
//! and asks a token realm only by `GET` with HTTP basic credentials, so it cannot do this:
//! kbuild asks `GET /v2/` for the registry's `Bearer` challenge, `POST`s
//! `grant_type=refresh_token` (with `service`, `scope`, `client_id`, `refresh_token`) to its
//! realm, and hands the `access_token` it gets back to `oci-client` as a bearer token.
//!
//! This is what docker does with an identity token (distribution's
//! `registry/client/auth/session.go`); Azure Container Registry, for one, only accepts the
//! exchange.

use std::time::Duration;

/// Why the exchange failed. No variant holds the refresh token or the access token.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The token server refused the identity token (it answered `status`, saying `said`).
    #[error("the token server `{realm}` refused the identity token: {status} {said}")]
    Refused {
        realm: String,
        status: u16,
        said: String,
    },
    /// The token server's answer has no `access_token`.
    #[error("the token server `{realm}` answered without an `access_token`")]
    NoAccessToken { realm: String },
    /// `url` could not be reached, or answered something unreadable.
    #[error("the request to `{url}` failed")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// How to reach the registry and its token server.
pub struct Http {
    client: reqwest::Client,
    scheme: &'static str,
}

impl Http {
    /// An HTTP client trusting the system's roots plus `extra_pem` (a PEM bundle, the
    /// `--ca-file`), giving up after `timeout` of silence; `plain_http` speaks to the
    /// registry (not to its realm, whose URL has its own scheme) without TLS.
    pub fn new(
        extra_pem: Option<&[u8]>,
        timeout: Duration,
        plain_http: bool,
    ) -> Result<Http, reqwest::Error> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("kbuild/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = extra_pem {
            b = b.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem)?);
        }
        Ok(Http {
            client: b.build()?,
            scheme: if plain_http { "http" } else { "https" },
        })
    }

    /// The client, for kbuild's other request of its own: a pull's manifest, read with a cap
    /// (`remote`).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// `http` with `--plain-http`, else `https`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Exchanges `refresh_token` for an access token to `repository` on `registry`
    /// (`host[:port]`), for pulling or (`push`) pulling and pushing. `None` when the registry
    /// asks for no bearer token (no challenge, or `Basic`): the caller then sends the
    /// identity token as it is, as before.
    pub async fn exchange(
        &self,
        registry: &str,
        repository: &str,
        push: bool,
        refresh_token: &str,
    ) -> Result<Option<String>, ExchangeError> {
        let url = format!("{}://{registry}/v2/", self.scheme);
        let transport = |url: &str| {
            let url = url.to_owned();
            move |source| ExchangeError::Transport { url, source }
        };
        let res = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(transport(&url))?;
        let Some((realm, service)) = res
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(bearer_challenge)
        else {
            return Ok(None);
        };
        let scope = format!(
            "repository:{repository}:{}",
            if push { "pull,push" } else { "pull" }
        );
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("client_id", "kbuild"),
            ("scope", scope.as_str()),
            ("refresh_token", refresh_token),
        ];
        if let Some(s) = &service {
            form.push(("service", s));
        }
        let res = self
            .client
            .post(&realm)
            .form(&form)
            .send()
            .await
            .map_err(transport(&realm))?;
        let status = res.status();
        if !status.is_success() {
            // What the token server said (its error envelope), cut short: it helps, and it
            // holds no secret of ours.
            let mut said = res.text().await.unwrap_or_default();
            said.truncate(said.floor_char_boundary(500));
            return Err(ExchangeError::Refused {
                realm,
                status: status.as_u16(),
                said: said.trim().to_owned(),
            });
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(default)]
            access_token: Option<String>,
        }
        let answer: Answer = res.json().await.map_err(transport(&realm))?;
        match answer.access_token.filter(|t| !t.is_empty()) {
            Some(t) => Ok(Some(t)),
            None => Err(ExchangeError::NoAccessToken { realm }),
        }
    }
}

/// The `realm` and `service` of a `Bearer` challenge in one `WWW-Authenticate` value.
fn bearer_challenge(header: &str) -> Option<(String, Option<String>)> {
    http_auth::parser::ChallengeParser::new(header)
        .filter_map(Result::ok)
        .find(|c| c.scheme.eq_ignore_ascii_case("Bearer"))
        .and_then(|c| {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            Some((param("realm")?, param("service")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_realm_and_service_of_a_bearer_challenge() {
        assert_eq!(
            bearer_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#
            ),
            Some((
                "https://auth.example/token".to_owned(),
                Some("registry.example".to_owned())
            ))
        );
        assert_eq!(bearer_challenge(r#"Basic realm="kbuild-test""#), None);
        assert_eq!(bearer_challenge("Bearer service=\"x\""), None);
    }
}
