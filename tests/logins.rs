//! Password logins at berth's token endpoint: guessing is throttled (429 with `Retry-After`),
//! an unknown user name is answered exactly like a wrong password (also where the credentials
//! could be an upstream's), and a password change ends both the cached login and the refresh
//! tokens issued before it.

mod common;

use common::private::{password, AuthFiles};
use common::{config_for, Berth};
use reqwest::StatusCode;

/// A berth with `[auth]` and the given `[auth.login]` lines, mirroring an upstream that refuses
/// connections (so credentials passed through fail there).
fn private_berth(files: &AuthFiles, login: &str) -> Berth {
    private_berth_with(files, login, "")
}

/// The same, with extra `[server]` lines.
fn private_berth_with(files: &AuthFiles, login: &str, server: &str) -> Berth {
    let closed = format!("http://127.0.0.1:{}", common::upstream::free_port());
    let config = format!(
        "{}{}",
        files.config(&format!("[auth.login]\n{login}")),
        config_for(&closed, "5m", "")
    );
    Berth::start(&config.replacen("[server]\n", &format!("[server]\n{server}"), 1))
}

/// The parts of an answer a client can tell apart.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: StatusCode,
    www_authenticate: Option<String>,
    retry_after: Option<String>,
    body: String,
}

async fn answer(response: reqwest::Response) -> Answer {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Answer {
        status: response.status(),
        www_authenticate: header("www-authenticate"),
        retry_after: header("retry-after"),
        body: response.text().await.unwrap(),
    }
}

/// `GET /token` with Basic credentials.
async fn get_token(berth: &Berth, user: &str, pass: &str, scopes: &[&str]) -> Answer {
    let mut request = reqwest::Client::new()
        .get(format!("{}/token", berth.url))
        .query(&[("service", "berth-test")])
        .basic_auth(user, Some(pass));
    for scope in scopes {
        request = request.query(&[("scope", scope)]);
    }
    answer(request.send().await.unwrap()).await
}

/// `POST /token` with an OAuth2 form.
async fn post_token(berth: &Berth, form: &[(&str, &str)]) -> Answer {
    let mut fields = vec![("service", "berth-test"), ("client_id", "berth-tests")];
    fields.extend_from_slice(form);
    let response = reqwest::Client::new()
        .post(format!("{}/token", berth.url))
        .form(&fields)
        .send()
        .await
        .unwrap();
    answer(response).await
}

async fn password_grant(berth: &Berth, user: &str, pass: &str) -> Answer {
    post_token(
        berth,
        &[
            ("grant_type", "password"),
            ("username", user),
            ("password", pass),
            ("access_type", "offline"),
            ("scope", "repository:team/app:pull"),
        ],
    )
    .await
}

async fn refresh_grant(berth: &Berth, refresh_token: &str) -> Answer {
    post_token(
        berth,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("scope", "repository:team/app:pull"),
        ],
    )
    .await
}

fn json(answer: &Answer) -> serde_json::Value {
    serde_json::from_str(&answer.body).unwrap()
}

fn assert_throttled(answer: &Answer, window_secs: u64) {
    assert_eq!(answer.status, 429, "{answer:?}");
    let retry: u64 = answer
        .retry_after
        .as_deref()
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=window_secs).contains(&retry), "{answer:?}");
    assert_eq!(json(answer)["errors"][0]["code"], "TOOMANYREQUESTS");
}

#[tokio::test]
async fn repeated_wrong_passwords_are_throttled_per_user_and_per_address() {
    let files = AuthFiles::create();
    let berth = private_berth(
        &files,
        "failures_per_user = 3\nfailures_per_address = 6\nfailure_window = \"1m\"\n",
    );
    for attempt in 0..3 {
        let refused = get_token(&berth, "alice", "guess", &[]).await;
        assert_eq!(refused.status, 401, "attempt {attempt}: {refused:?}");
    }
    // The fourth guess is not checked at all; nor is the right password, until the window ends.
    assert_throttled(&get_token(&berth, "alice", "guess", &[]).await, 60);
    assert_throttled(
        &get_token(&berth, "alice", password("alice"), &[]).await,
        60,
    );
    assert_throttled(
        &password_grant(&berth, "alice", password("alice")).await,
        60,
    );

    // Another user from the same address still logs in: 3 failures of 6 so far.
    assert_eq!(
        get_token(&berth, "bob", password("bob"), &[]).await.status,
        200
    );
    // Guesses at names that do not exist count towards the address as well.
    for name in ["mallory", "trudy", "eve"] {
        assert_eq!(get_token(&berth, name, "guess", &[]).await.status, 401);
    }
    assert_throttled(
        &get_token(&berth, "carol", password("carol"), &[]).await,
        60,
    );
}

/// A wrong-password `GET /token` claiming to come from `forwarded`.
async fn guess_from(berth: &Berth, user: &str, forwarded: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{}/token?service=berth-test", berth.url))
        .basic_auth(user, Some("guess"))
        .header("X-Forwarded-For", forwarded)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let files = AuthFiles::create();
    let login = "failures_per_user = 100\nfailures_per_address = 3\n";
    // Behind a trusted proxy (the test client plays it), each forwarded client has its own count.
    let proxied = private_berth_with(&files, login, "trusted_proxies = [\"127.0.0.1\"]\n");
    for name in ["u1", "u2", "u3"] {
        assert_eq!(guess_from(&proxied, name, "192.0.2.1").await, 401);
    }
    assert_eq!(guess_from(&proxied, "u4", "192.0.2.1").await, 429);
    // A client's own forged entry left of the proxy's does not escape its count.
    assert_eq!(guess_from(&proxied, "u4", "10.9.9.9, 192.0.2.1").await, 429);
    assert_eq!(guess_from(&proxied, "u4", "192.0.2.2").await, 401);

    // Without trusted proxies, the header is the client's word and changes nothing.
    let direct = private_berth(&files, login);
    for (name, forwarded) in [
        ("u1", "192.0.2.1"),
        ("u2", "192.0.2.2"),
        ("u3", "192.0.2.3"),
    ] {
        assert_eq!(guess_from(&direct, name, forwarded).await, 401);
    }
    assert_eq!(guess_from(&direct, "u4", "192.0.2.4").await, 429);
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_get_the_same_answer() {
    let files = AuthFiles::create();
    let berth = private_berth(
        &files,
        "failures_per_user = 50\nfailures_per_address = 100\n",
    );
    // No scope (docker login), a project, and a mirror repository: there the unknown user's
    // credentials could be the upstream's and are tried there (it refuses the connection).
    // Only the last is passed through: never a local user's, never without a mirror scope.
    let relayed = || {
        berth
            .log()
            .matches("passed-through credentials refused")
            .count()
    };
    for (scopes, relays) in [
        (&[][..], 0),
        (&["repository:team/app:pull,push"][..], 0),
        (
            &["repository:team/app:pull", "repository:library/alpine:pull"][..],
            0,
        ),
        (&["repository:library/alpine:pull"][..], 1),
    ] {
        let wrong = get_token(&berth, "alice", "not-her-password", scopes).await;
        let unknown = get_token(&berth, "no-such-user", "not-her-password", scopes).await;
        assert_eq!(wrong.status, 401, "{scopes:?}: {wrong:?}");
        assert_eq!(wrong, unknown, "{scopes:?}");
        assert_eq!(json(&wrong)["errors"][0]["code"], "UNAUTHORIZED");
        assert_eq!(relayed(), relays, "{scopes:?}");
    }
    let wrong = password_grant(&berth, "alice", "not-her-password").await;
    let unknown = password_grant(&berth, "no-such-user", "not-her-password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong, unknown);
    // And the control: the right password is another answer.
    assert_eq!(
        get_token(&berth, "alice", password("alice"), &[])
            .await
            .status,
        200
    );
}

/// Writes the htpasswd file anew with `changes` applied: `(user, Some(new password))` or
/// `(user, None)` to remove the user.
fn rewrite_htpasswd(files: &AuthFiles, changes: &[(&str, Option<&str>)]) {
    let old = std::fs::read_to_string(&files.htpasswd).unwrap();
    let mut text = String::new();
    for line in old.lines() {
        let user = line.split(':').next().unwrap_or_default();
        match changes.iter().find(|(u, _)| *u == user) {
            None => text.push_str(&format!("{line}\n")),
            Some((_, None)) => {}
            Some((_, Some(new))) => {
                text.push_str(&format!("{user}:{}\n", bcrypt::hash(new, 4).unwrap()))
            }
        }
    }
    // A modification time of its own, even on a file system with coarse timestamps.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&files.htpasswd, text).unwrap();
}

fn refresh_token(answer: &Answer) -> String {
    assert_eq!(answer.status, 200, "{answer:?}");
    json(answer)["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_password_change_ends_cached_logins_and_refresh_tokens() {
    let files = AuthFiles::create();
    let berth = private_berth(&files, "");
    let alice_refresh = refresh_token(&password_grant(&berth, "alice", password("alice")).await);
    let bob_refresh = refresh_token(&password_grant(&berth, "bob", password("bob")).await);
    // Logged in again (from the cache of verified logins) and refreshed: all fine.
    assert_eq!(
        password_grant(&berth, "alice", password("alice"))
            .await
            .status,
        200
    );
    assert_eq!(refresh_grant(&berth, &alice_refresh).await.status, 200);

    rewrite_htpasswd(&files, &[("alice", Some("alice-new-pw"))]);
    // The old password is refused at once, although it was verified moments ago.
    assert_eq!(
        password_grant(&berth, "alice", password("alice"))
            .await
            .status,
        401
    );
    let refused = refresh_grant(&berth, &alice_refresh).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(json(&refused)["errors"][0]["code"], "UNAUTHORIZED");
    // The new password works, and its refresh token too.
    let new_refresh = refresh_token(&password_grant(&berth, "alice", "alice-new-pw").await);
    assert_eq!(refresh_grant(&berth, &new_refresh).await.status, 200);
    // Bob's password did not change: his refresh token and his login still work.
    assert_eq!(refresh_grant(&berth, &bob_refresh).await.status, 200);
    assert_eq!(
        password_grant(&berth, "bob", password("bob")).await.status,
        200
    );

    // Removing bob ends his refresh token as well.
    rewrite_htpasswd(&files, &[("bob", None)]);
    assert_eq!(refresh_grant(&berth, &bob_refresh).await.status, 401);
    assert_eq!(
        password_grant(&berth, "bob", password("bob")).await.status,
        401
    );
    assert_eq!(refresh_grant(&berth, &new_refresh).await.status, 200);
}
