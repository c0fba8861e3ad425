use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use chrono::TimeZone;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use super::*;
use crate::gateway::policy::{
    clock::ManualClock,
    jwks::{JwksSource, parse_jwks},
};

const RSA_PRIVATE: &[u8] = include_bytes!("testdata/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("testdata/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("testdata/ec_private.pem");
const JWKS: &[u8] = include_bytes!("testdata/jwks.json");

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

fn config(scopes: &[&str]) -> JwtConfig {
    JwtConfig {
        issuer: "https://issuer.example".into(),
        audiences: vec!["api://shop".into(), "other".into()],
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        jwks: JwksSource::Url("http://issuer.example/jwks".into()),
        identity_source: "$request.header.Authorization".into(),
    }
}

fn claims() -> Value {
    let t = now().timestamp();
    json!({
        "iss": "https://issuer.example",
        "aud": "api://shop",
        "sub": "user-1",
        "exp": t + 600,
        "iat": t - 10,
        "scope": "orders:read profile",
        "groups": ["a", "b"],
    })
}

fn sign(alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC_PRIVATE),
        _ => EncodingKey::from_rsa_pem(RSA_PRIVATE),
    }
    .expect("test key");
    encode(&header, claims, &key).expect("signs")
}

fn key(kid: &str) -> VerifyKey {
    parse_jwks(JWKS)
        .expect("jwks")
        .into_iter()
        .find(|k| k.kid.as_deref() == Some(kid))
        .expect("key")
}

fn check(token: &str, kid: &str, scopes: &[&str]) -> Result<JwtIdentity, JwtError> {
    verify(token, &key(kid), &config(scopes), now(), DEFAULT_LEEWAY)
}

#[test]
fn valid_rs256_and_es256_tokens_pass() {
    let identity = check(&sign(Algorithm::RS256, "rsa-1", &claims()), "rsa-1", &[]).expect("valid");
    assert_eq!(identity.claims["sub"], "user-1");
    assert_eq!(identity.scopes, ["orders:read", "profile"]);
    let identity = check(&sign(Algorithm::ES256, "ec-1", &claims()), "ec-1", &[]).expect("valid");
    assert_eq!(identity.claims["iss"], "https://issuer.example");
}

#[test]
fn claims_go_into_the_event_as_strings() {
    let identity = check(&sign(Algorithm::RS256, "rsa-1", &claims()), "rsa-1", &[]).expect("valid");
    let event = identity.event_authorizer(&[], PayloadFormat::V2);
    let c = &event["jwt"]["claims"];
    assert_eq!(c["exp"], (now().timestamp() + 600).to_string());
    assert_eq!(c["groups"], "[a b]");
    assert_eq!(c["sub"], "user-1");
    assert_eq!(event["jwt"]["scopes"], Value::Null);
    let event = identity.event_authorizer(&["orders:read".into()], PayloadFormat::V2);
    assert_eq!(event["jwt"]["scopes"], json!(["orders:read", "profile"]));
    let v1 = identity.event_authorizer(&[], PayloadFormat::V1);
    assert_eq!(v1["claims"]["sub"], "user-1");
}

#[test]
fn time_claims_use_the_given_clock_with_leeway() {
    let t = now().timestamp();
    let mut c = claims();
    c["exp"] = json!(t - 20);
    assert!(check(&sign(Algorithm::RS256, "rsa-1", &c), "rsa-1", &[]).is_ok());
    c["exp"] = json!(t - 31);
    let err = check(&sign(Algorithm::RS256, "rsa-1", &c), "rsa-1", &[]).expect_err("expired");
    assert_eq!(err, JwtError::Expired);
    assert_eq!(err.refusal(), Refusal::Unauthorized);

    let mut c = claims();
    c["nbf"] = json!(t + 120);
    let err = check(&sign(Algorithm::RS256, "rsa-1", &c), "rsa-1", &[]).expect_err("nbf");
    assert_eq!(err, JwtError::NotYetValid);
    let mut c = claims();
    c["iat"] = json!(t + 120);
    assert_eq!(
        check(&sign(Algorithm::RS256, "rsa-1", &c), "rsa-1", &[]),
        Err(JwtError::NotYetValid)
    );
    let mut c = claims();
    c.as_object_mut().map(|o| o.remove("exp"));
    assert!(matches!(
        check(&sign(Algorithm::RS256, "rsa-1", &c), "rsa-1", &[]),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn issuer_and_audience_must_match() {
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    let err = check(&sign(Algorithm::RS256, "rsa-1", &c), "rsa-1", &[]).expect_err("iss");
    assert_eq!(err, JwtError::InvalidIssuer);

    let mut c = claims();
    c["aud"] = json!(["x", "y"]);
    let err = check(&sign(Algorithm::RS256, "rsa-1", &c), "rsa-1", &[]).expect_err("aud");
    assert_eq!(err, JwtError::InvalidAudience);
    assert_eq!(
        err.www_authenticate(&[]),
        "Bearer scope=\"\" error=\"invalid_token\" error_description=\"the token does not have a valid audience\""
    );
    c["aud"] = json!(["x", "other"]);
    assert!(check(&sign(Algorithm::RS256, "rsa-1", &c), "rsa-1", &[]).is_ok());

    // client_id counts only without aud, as API Gateway.
    let mut c = claims();
    c.as_object_mut().map(|o| o.remove("aud"));
    c["client_id"] = json!("api://shop");
    assert!(check(&sign(Algorithm::RS256, "rsa-1", &c), "rsa-1", &[]).is_ok());
    c["aud"] = json!("wrong");
    assert_eq!(
        check(&sign(Algorithm::RS256, "rsa-1", &c), "rsa-1", &[]).map(|_| ()),
        Err(JwtError::InvalidAudience)
    );
}

#[test]
fn scopes_are_any_of_from_scope_or_scp() {
    let token = sign(Algorithm::RS256, "rsa-1", &claims());
    assert!(check(&token, "rsa-1", &["admin", "profile"]).is_ok());
    let err = check(&token, "rsa-1", &["admin"]).expect_err("no scope");
    assert_eq!(err, JwtError::MissingScope);
    assert_eq!(err.refusal(), Refusal::Forbidden);
    assert!(
        err.www_authenticate(&["admin".into()])
            .contains("insufficient_scope")
    );

    let mut c = claims();
    c.as_object_mut().map(|o| o.remove("scope"));
    c["scp"] = json!(["admin", "x"]);
    assert!(check(&sign(Algorithm::RS256, "rsa-1", &c), "rsa-1", &["admin"]).is_ok());
}

#[test]
fn algorithm_attacks_are_refused() {
    // alg none: no signature at all.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    let none = format!("{header}.{payload}.");
    assert!(matches!(
        check(&none, "rsa-1", &[]),
        Err(JwtError::Malformed(_))
    ));

    // HS256 "signed" with the RSA public key as the HMAC secret.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let forged = encode(&h, &claims(), &EncodingKey::from_secret(RSA_PUBLIC)).expect("hmac");
    let err = check(&forged, "rsa-1", &[]).expect_err("hs256");
    assert!(matches!(err, JwtError::DisallowedAlgorithm(_)), "{err:?}");
    assert_eq!(err.refusal(), Refusal::Unauthorized);

    // An algorithm the key does not declare, and a key of another type.
    let ps = sign(Algorithm::PS256, "rsa-1", &claims());
    assert!(matches!(
        check(&ps, "rsa-1", &[]),
        Err(JwtError::DisallowedAlgorithm(_))
    ));
    let rs = sign(Algorithm::RS256, "ec-1", &claims());
    assert!(matches!(
        check(&rs, "ec-1", &[]),
        Err(JwtError::DisallowedAlgorithm(_))
    ));

    // A tampered payload.
    let token = sign(Algorithm::RS256, "rsa-1", &claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut evil = claims();
    evil["sub"] = json!("admin");
    let evil = URL_SAFE_NO_PAD.encode(evil.to_string());
    parts[1] = &evil;
    assert_eq!(
        check(&parts.join("."), "rsa-1", &[]).map(|_| ()),
        Err(JwtError::BadSignature)
    );
    assert!(matches!(
        check("not-a-token", "rsa-1", &[]),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn the_token_is_read_alone_or_after_bearer() {
    assert_eq!(token_from(Some("Bearer abc")), Ok("abc"));
    assert_eq!(token_from(Some("bearer  abc ")), Ok("abc"));
    assert_eq!(token_from(Some("abc")), Ok("abc"));
    assert_eq!(token_from(Some("Bearer ")), Err(JwtError::MissingToken));
    assert_eq!(token_from(None), Err(JwtError::MissingToken));
    assert_eq!(
        JwtError::MissingToken.refusal(),
        Refusal::Unauthorized,
        "a missing token is 401"
    );
}

#[tokio::test]
async fn the_verifier_fetches_keys_and_refetches_on_an_unknown_kid() {
    use crate::gateway::policy::jwks::tests::FakeFetcher;
    let clock = ManualClock::new(now());
    let fetcher = FakeFetcher::with(vec![
        Ok(Bytes::from_static(b"{\"keys\":[]}")),
        Ok(Bytes::from_static(JWKS)),
    ]);
    let cache = Arc::new(JwksCache::new(fetcher.clone(), clock.clone()));
    let verifier = JwtVerifier::new(cache, clock.clone());
    let token = sign(Algorithm::RS256, "rsa-1", &claims());
    let bearer = format!("Bearer {token}");
    let cfg = config(&[]);
    assert_eq!(
        verifier.authorize(&cfg, Some(&bearer)).await.map(|_| ()),
        Err(JwtError::UnknownKey(Some("rsa-1".into())))
    );
    clock.advance(Duration::from_secs(31));
    let identity = verifier
        .authorize(&cfg, Some(&bearer))
        .await
        .expect("valid after the refetch");
    assert_eq!(identity.claims["sub"], "user-1");
    assert_eq!(fetcher.count(), 2);
    assert_eq!(
        verifier.authorize(&cfg, None).await.map(|_| ()),
        Err(JwtError::MissingToken)
    );
    // A remembered signature still meets each route's own claim checks.
    assert_eq!(
        verifier
            .authorize(&config(&["admin"]), Some(&bearer))
            .await
            .map(|_| ()),
        Err(JwtError::MissingScope)
    );
    let mut tampered = token.clone();
    tampered.push('x');
    assert!(verifier.authorize(&cfg, Some(&tampered)).await.is_err());
    assert_eq!(fetcher.count(), 2);
    // The verifier reads time from the clock: ten minutes on, the token has expired.
    clock.advance(Duration::from_secs(600));
    assert_eq!(
        verifier.authorize(&cfg, Some(&bearer)).await.map(|_| ()),
        Err(JwtError::Expired)
    );
}

#[test]
fn config_from_a_route() {
    let spec = JwtAuthorizer {
        issuer: "i".into(),
        audiences: vec!["a".into()],
        jwks_uri: None,
        jwks_secret: Some("keys".into()),
        scopes: vec![],
        identity_source: None,
    };
    let cfg = JwtConfig::from_spec(&spec, "ns").expect("valid");
    assert_eq!(cfg.jwks, JwksSource::Secret("ns/keys".into()));
    assert_eq!(cfg.identity_source, "$request.header.Authorization");
}
