use super::*;
use crate::auth::claims::now_secs;
use crate::auth::credentials::Credentials;
use crate::auth::keys::tests::{key, EC_SEC1};
use crate::auth::policy::tests::{projects, settings};
use crate::auth::refresh::REFRESH_TOKEN_USE;
use crate::auth::scope::Action::{All, Delete, Pull, Push};
use crate::auth::scope::ResourceType;
use crate::auth::verify::VERIFIED_CACHE_BYTES;
use base64::Engine as _;
use serde::Serialize;
use std::io::Write;

struct Fixture {
    service: TokenService,
    htpasswd: tempfile::NamedTempFile,
}

fn fixture() -> Fixture {
    let mut htpasswd = tempfile::NamedTempFile::new().unwrap();
    for (user, password) in [("dave", "dev"), ("gina", "guest"), ("root", "admin")] {
        writeln!(htpasswd, "{user}:{}", bcrypt::hash(password, 4).unwrap()).unwrap();
    }
    let mut auth = settings(true);
    auth.service = "registry.test".into();
    auth.issuer = "berth-issuer".into();
    auth.htpasswd = Some(htpasswd.path().to_path_buf());
    let service = TokenService::new(&auth, &projects(), key(EC_SEC1)).unwrap();
    Fixture { service, htpasswd }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn basic_authentication() {
    let f = fixture();
    let s = &f.service;
    let check = |header: &str| {
        let parsed = Credentials::from_basic(header);
        async move {
            let credentials = parsed?;
            s.authenticate(&credentials, None)
                .await
                .map(|()| credentials.username)
        }
    };
    assert_eq!(check(&basic("dave", "dev")).await.unwrap(), "dave");
    for (user, password) in [("dave", "wrong"), ("nobody", "dev"), ("", "")] {
        assert!(matches!(
            check(&basic(user, password)).await,
            Err(AuthError::InvalidCredentials)
        ));
    }
    for malformed in ["Basic", "Basic !!!", "Bearer abc", "Basic ZGF2ZQ=="] {
        assert!(
            matches!(
                check(malformed).await,
                Err(AuthError::MalformedCredentials(_))
            ),
            "{malformed}"
        );
    }
}

#[test]
fn issued_tokens_carry_the_spec_claims() {
    let f = fixture();
    let s = &f.service;
    let asked = [
        Scope::repository("secret/app", &[Pull, Push]),
        Scope::repository("library/alpine", &[Pull, Push]),
        Scope::repository("other/private", &[Pull]),
    ];
    let response = s.issue(Some("dave"), &asked, false).unwrap();
    assert_eq!(response.token, response.access_token);
    assert_eq!(response.expires_in, 300);
    assert!(response.refresh_token.is_none());
    assert!(humantime::parse_rfc3339(&response.issued_at).is_ok());

    let claims = s.verify_access(&response.token).unwrap();
    assert_eq!(claims.iss, "berth-issuer");
    assert_eq!(claims.aud, "registry.test");
    assert_eq!(claims.subject(), Some("dave"));
    assert_eq!(claims.exp, claims.iat + 300);
    assert_eq!(claims.jti.len(), 32);
    assert_eq!(
        claims.access,
        // A push asked on the mirror grants nothing there, not even pull.
        [
            Scope::repository("secret/app", &[Pull, Push]),
            Scope::repository("other/private", &[Pull]),
        ]
    );
    assert!(claims.allows(&ResourceType::Repository, "secret/app", Push));
    assert!(!claims.allows(&ResourceType::Repository, "secret/app", Delete));
    assert!(!claims.allows(&ResourceType::Repository, "library/alpine", Push));
    assert!(!claims.allows(&ResourceType::Repository, "secret/other", Pull));
    assert!(!claims.allows(&ResourceType::Registry, "catalog", All));

    // Each token is distinct.
    let again = s.issue(Some("dave"), &asked, false).unwrap();
    assert_ne!(again.token, response.token);
}

#[test]
fn anonymous_tokens() {
    let f = fixture();
    let s = &f.service;
    let response = s
        .issue(
            None,
            &[Scope::repository("secret/app", &[Pull]), Scope::catalog()],
            true,
        )
        .unwrap();
    // Anonymous clients get no refresh token, whatever they ask.
    assert!(response.refresh_token.is_none());
    let claims = s.verify_access(&response.token).unwrap();
    assert_eq!(claims.subject(), None);
    assert_eq!(claims.access, [Scope::catalog()]);
    assert!(claims.allows(&ResourceType::Registry, "catalog", All));
}

#[test]
fn verified_tokens_are_cached() {
    let f = fixture();
    let s = &f.service;
    let token = s.issue(Some("gina"), &[], false).unwrap().token;
    let first = s.verify_access(&token).unwrap();
    let second = s.verify_access(&token).unwrap();
    assert!(Arc::ptr_eq(&first, &second));
}

#[test]
fn verified_tokens_are_bounded_in_bytes_and_length() {
    let f = fixture();
    let s = &f.service;
    // A token with many scopes weighs what it carries, not one entry like any other.
    let many: Vec<Scope> = (0..64)
        .map(|i| Scope::repository(format!("library/{i:0>200}"), &[Pull]))
        .collect();
    let token = s.issue(None, &many, false).unwrap().token;
    let claims = s.verify_access(&token).unwrap();
    assert!(claims.heap_bytes() > 64 * 200, "{}", claims.heap_bytes());
    let cached = s.verifier.cached_bytes();
    assert!(cached as usize >= token.len() + claims.heap_bytes());
    assert!(cached <= VERIFIED_CACHE_BYTES);
    // A token too long to be one of berth's is refused before any work.
    let long = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert!(matches!(
        s.verify_access(&long),
        Err(AuthError::InvalidToken(_))
    ));
}

#[test]
fn refresh_tokens_refresh_and_nothing_else() {
    let f = fixture();
    let s = &f.service;
    let asked = [Scope::repository("secret/app", &[Pull, Push])];
    let response = s.issue(Some("dave"), &asked, true).unwrap();
    let refresh = response.refresh_token.unwrap();

    // A refresh token is not an access token, even to a verifier that skips the marker.
    assert!(matches!(
        s.verify_access(&refresh),
        Err(AuthError::InvalidToken(_))
    ));
    // An access token is not a refresh token.
    assert!(matches!(
        s.refresh(&response.token, &asked),
        Err(AuthError::InvalidToken(_))
    ));

    let refreshed = s.refresh(&refresh, &asked).unwrap();
    assert!(refreshed.refresh_token.is_none());
    let claims = s.verify_access(&refreshed.token).unwrap();
    assert_eq!(claims.subject(), Some("dave"));
    assert!(claims.allows(&ResourceType::Repository, "secret/app", Push));

    // A new password revokes the refresh tokens issued before it, not those after.
    let mut file = std::fs::File::create(f.htpasswd.path()).unwrap();
    writeln!(file, "dave:{}", bcrypt::hash("dev2", 4).unwrap()).unwrap();
    drop(file);
    assert!(matches!(
        s.refresh(&refresh, &asked),
        Err(AuthError::InvalidToken(_))
    ));
    let after = s.issue(Some("dave"), &asked, true).unwrap();
    let refresh_after = after.refresh_token.unwrap();
    assert!(s.refresh(&refresh_after, &asked).is_ok());

    // Removing the user revokes their refresh tokens. (The same size as the file before:
    // let the modification time move on.)
    std::thread::sleep(Duration::from_millis(20));
    let mut file = std::fs::File::create(f.htpasswd.path()).unwrap();
    writeln!(file, "gina:{}", bcrypt::hash("guest", 4).unwrap()).unwrap();
    drop(file);
    assert!(matches!(
        s.refresh(&refresh_after, &asked),
        Err(AuthError::InvalidCredentials)
    ));
    assert!(matches!(
        s.refresh(&refresh, &asked),
        Err(AuthError::InvalidCredentials)
    ));
}

#[test]
fn forged_refresh_claims_are_rejected_as_access_tokens() {
    // Even a refresh-marked token with the service audience and an access list is refused.
    let f = fixture();
    let s = &f.service;
    #[derive(Serialize)]
    struct Marked<'a> {
        #[serde(flatten)]
        claims: &'a AccessClaims,
        token_use: &'a str,
    }
    let now = now_secs();
    let claims = AccessClaims {
        iss: "berth-issuer".into(),
        sub: "dave".into(),
        aud: "registry.test".into(),
        exp: now + 60,
        nbf: now,
        iat: now,
        jti: "x".into(),
        access: vec![Scope::repository("secret/app", &[Pull])],
        upg: None,
    };
    let token = s
        .signing_key()
        .sign(&Marked {
            claims: &claims,
            token_use: REFRESH_TOKEN_USE,
        })
        .unwrap();
    assert!(matches!(
        s.verify_access(&token),
        Err(AuthError::InvalidToken(_))
    ));
    // The same claims without the marker are fine (the control).
    assert!(s
        .verify_access(&s.signing_key().sign(&claims).unwrap())
        .is_ok());
}

#[test]
fn expired_and_foreign_tokens_are_rejected() {
    let f = fixture();
    let s = &f.service;
    let now = now_secs();
    let mut claims = AccessClaims {
        iss: "berth-issuer".into(),
        sub: "dave".into(),
        aud: "registry.test".into(),
        exp: now - 120,
        nbf: now - 400,
        iat: now - 400,
        jti: "x".into(),
        access: vec![],
        upg: None,
    };
    let expired = s.signing_key().sign(&claims).unwrap();
    assert!(matches!(
        s.verify_access(&expired),
        Err(AuthError::InvalidToken(_))
    ));
    claims.exp = now + 60;
    claims.aud = "someone-else".into();
    let foreign = s.signing_key().sign(&claims).unwrap();
    assert!(matches!(
        s.verify_access(&foreign),
        Err(AuthError::InvalidToken(_))
    ));
    claims.aud = "registry.test".into();
    claims.iss = "mallory".into();
    let forged = s.signing_key().sign(&claims).unwrap();
    assert!(matches!(
        s.verify_access(&forged),
        Err(AuthError::InvalidToken(_))
    ));
    assert!(matches!(
        s.verify_access("garbage"),
        Err(AuthError::InvalidToken(_))
    ));
}

#[tokio::test]
async fn without_htpasswd_nobody_logs_in() {
    let auth = settings(true);
    let s = TokenService::new(&auth, &projects(), key(EC_SEC1)).unwrap();
    assert!(matches!(
        s.authenticate(&Credentials::new("root", "admin"), None)
            .await,
        Err(AuthError::InvalidCredentials)
    ));
    assert!(s.issue(None, &[], false).is_ok());
}

fn upstream_grant(user: &str) -> crate::auth::seal::UpstreamGrant {
    crate::auth::seal::UpstreamGrant {
        upstream: "docker.io".into(),
        identity: format!("id-of-{user}"),
        tokens: vec![crate::auth::seal::GrantToken {
            repo: "library/alpine".into(),
            authorization: format!("Bearer upstream-token-of-{user}"),
            expires: now_secs() + 300,
        }],
    }
}

#[test]
fn a_passthrough_token_carries_its_grant_sealed_to_every_node_with_the_key() {
    let node1 = fixture().service;
    // Another node: the same key (in another container), its own memory.
    let mut auth = settings(true);
    auth.service = "registry.test".into();
    auth.issuer = "berth-issuer".into();
    let node2 =
        TokenService::new(&auth, &projects(), key(crate::auth::keys::tests::EC_PKCS8)).unwrap();
    let grant = upstream_grant("alice");
    let response = node1
        .issue_for_upstream(
            "alice",
            &["alpine".into()],
            &grant,
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    assert!(response.expires_in <= 60);
    // Neither the upstream token nor anything else of the grant is readable in the token.
    let payload = response.token.split('.').nth(1).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let payload = String::from_utf8(payload).unwrap();
    assert!(payload.contains("\"upg\""), "{payload}");
    assert!(!payload.contains("upstream-token-of-alice"), "{payload}");
    assert!(!payload.contains("id-of-alice"), "{payload}");

    let claims = node2.verify_access(&response.token).unwrap();
    assert_eq!(node2.upstream_grant(&claims).unwrap(), Some(grant));
    // The token endpoint's own tokens carry none.
    let plain = node1.issue(None, &[], false).unwrap();
    let claims = node2.verify_access(&plain.token).unwrap();
    assert_eq!(node2.upstream_grant(&claims).unwrap(), None);
}

#[test]
fn a_grant_opens_only_in_the_token_it_was_sealed_into() {
    let s = fixture().service;
    let alice = s
        .issue_for_upstream(
            "alice",
            &["alpine".into()],
            &upstream_grant("alice"),
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let bob = s
        .issue_for_upstream(
            "bob",
            &["alpine".into()],
            &upstream_grant("bob"),
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let alice = s.verify_access(&alice.token).unwrap();
    let bob = s.verify_access(&bob.token).unwrap();
    // Even a holder of the key re-signing bob's claims with alice's sealed grant (or with a
    // grant altered by one character) gets a token that is refused.
    for upg in [
        alice.upg.clone().unwrap(),
        format!("{}A", bob.upg.as_deref().unwrap()),
    ] {
        let mut forged = (*bob).clone();
        forged.upg = Some(upg);
        let token = s.signing_key().sign(&forged).unwrap();
        let claims = s.verify_access(&token).unwrap();
        let err = s.upstream_grant(&claims).unwrap_err();
        assert!(matches!(err, AuthError::InvalidToken(_)), "{err}");
    }
    // A node with another key refuses the grant (and the token itself).
    let other = TokenService::open(key(crate::auth::keys::tests::RSA_PKCS1)).unwrap();
    assert!(other.upstream_grant(&bob).is_err());
}

#[test]
fn identity_ids_match_across_nodes_with_the_key() {
    let node1 = fixture().service;
    let node2 = TokenService::open(key(crate::auth::keys::tests::EC_PKCS8)).unwrap();
    let other = TokenService::open(key(crate::auth::keys::tests::RSA_PKCS1)).unwrap();
    let alice = Credentials::new("alice", "pw");
    let id = node1.identity_id("docker.io", &alice);
    assert_eq!(id, node2.identity_id("docker.io", &alice));
    assert_ne!(id, other.identity_id("docker.io", &alice));
    assert_ne!(
        id,
        node1.identity_id("docker.io", &Credentials::new("bob", "pw"))
    );
}
