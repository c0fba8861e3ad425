//! The policies a request passes before its function is called, in API Gateway's order: IP
//! rules, the authorizer (JWT or Lambda), the API key, then throttle and quota. Each refusal is
//! API Gateway's own answer ([`GatewayError::Policy`]).

use std::{sync::Arc, time::Instant};

use serde_json::Value;

use super::{
    error::GatewayError,
    handler::{Call, Gateway, Trace},
    policy::{
        Refusal,
        api_keys::API_KEY_HEADER,
        authorizer::{AuthorizerConfig, IdentityInputs, build_event, method_arn, read_outcome},
    },
    table::RouteTable,
};

/// What the policies learnt of the caller, for the event and the access log.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The API key's id (never the key).
    pub api_key_id: Option<String>,
    /// `requestContext.authorizer` of the event.
    pub authorizer: Option<Value>,
}

fn refused(refusal: Refusal) -> GatewayError {
    GatewayError::Policy {
        refusal,
        www_authenticate: None,
    }
}

impl Gateway {
    pub(super) async fn admit(
        &self,
        call: &Call<'_>,
        table: &RouteTable,
        deadline: Instant,
        wants_event: bool,
        trace: &mut Trace,
    ) -> Result<Admitted, GatewayError> {
        let stage = call.matched.stage;
        let route = call.matched.route;
        let policies = &route.policies;
        stage.policies.ip.check(call.source_ip).map_err(refused)?;

        let mut admitted = Admitted::default();
        if let Some(jwt) = &policies.jwt {
            let header = jwt
                .identity_source
                .strip_prefix("$request.header.")
                .unwrap_or("authorization");
            let value = call.parts.headers.get(header).and_then(|v| v.to_str().ok());
            // Boxed, as the authorizer call below: routes without them keep a small future.
            match Box::pin(self.policies.jwt.authorize(jwt, value)).await {
                Ok(identity) => {
                    if wants_event {
                        admitted.authorizer =
                            Some(identity.event_authorizer(&jwt.scopes, route.payload_format));
                    }
                }
                Err(e) => {
                    return Err(GatewayError::Policy {
                        refusal: e.refusal(),
                        www_authenticate: Some(e.www_authenticate(&jwt.scopes)),
                    });
                }
            }
        }
        if let Some(config) = &policies.authorizer {
            admitted.authorizer =
                Box::pin(self.lambda_authorize(call, config, table, deadline, trace)).await?;
        }

        let keys = self.policies.api_keys.load();
        let grant = if policies.api_key_required {
            let presented = call
                .parts
                .headers
                .get(API_KEY_HEADER)
                .and_then(|v| v.to_str().ok());
            let grant = keys
                .authorize(presented, &stage.policies.api_scope, &stage.name)
                .map_err(refused)?;
            admitted.api_key_id = Some(grant.key_id().to_owned());
            Some(grant)
        } else {
            None
        };
        self.policies
            .limiter
            .check(
                &stage.policies.id,
                stage.policies.throttle.as_ref(),
                grant.as_ref(),
            )
            .map_err(refused)?;
        Ok(admitted)
    }

    /// Asks the route's Lambda authorizer (or its cached answer) and returns the `context` for
    /// the event.
    async fn lambda_authorize(
        &self,
        call: &Call<'_>,
        config: &AuthorizerConfig,
        table: &RouteTable,
        deadline: Instant,
        trace: &mut Trace,
    ) -> Result<Option<Value>, GatewayError> {
        let source_ip = call.source_ip.to_string();
        let context = [
            ("sourceIp", source_ip.as_str()),
            ("requestId", call.request_id_text()),
        ];
        let inputs = IdentityInputs {
            headers: &call.parts.headers,
            query: call.parts.uri.query(),
            stage_variables: call.variables,
            context: &context,
        };
        // No identity: 401 without calling the authorizer.
        let identity = config.identity(&inputs).map_err(|e| refused(e.refusal()))?;
        let response = match self.policies.decisions.get(config, &identity) {
            Some(cached) => cached,
            None => {
                let failed = |reason: String| {
                    tracing::warn!(authorizer = %config.function, %reason, "authorizer failed");
                    refused(Refusal::AuthorizerFailed)
                };
                let key = call
                    .matched
                    .route
                    .authorizer_function
                    .as_ref()
                    .ok_or_else(|| failed("no authorizer function".into()))?;
                let entry = table
                    .function(key)
                    .ok_or_else(|| failed(format!("function {key} does not exist")))?;
                let input = call.event_input(&[], None, None);
                let event =
                    build_event(config, &input, &identity).map_err(|e| failed(e.to_string()))?;
                let outcome = self
                    .invoke(
                        entry,
                        call.request_id,
                        event,
                        deadline,
                        call.matched.route.timeout,
                        trace,
                    )
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                let response =
                    Arc::new(read_outcome(config, &outcome).map_err(|e| refused(e.refusal()))?);
                self.policies
                    .decisions
                    .put(config, &identity, Arc::clone(&response));
                response
            }
        };
        let stage = call.matched.stage;
        let arn = method_arn(
            call.api_id,
            &stage.name,
            call.parts.method.as_str(),
            call.matched.stage_path,
        );
        let decision = response.decide(&arn);
        decision.check().map_err(refused)?;
        Ok(decision.event_authorizer(call.matched.route.payload_format))
    }
}
