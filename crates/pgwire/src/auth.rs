//! Startup: protocol negotiation, authentication (trust, cleartext or MD5
//! password), the parameters reported to the client, and the session created
//! from the startup options (a bad `-c paxsql.read_level=...` refuses the
//! connection, as PostgreSQL refuses a bad `-c` option).

use crate::backend::Core;
use crate::session::{Session, SessionCell};
use crate::Db;
use async_trait::async_trait;
use futures::sink::Sink;
use pgwire::api::auth::cleartext::CleartextPasswordAuth;
use pgwire::api::auth::driver::AuthOutcome;
use pgwire::api::auth::md5pass::{hash_md5_password, Md5PasswordAuth};
use pgwire::api::auth::mechanism::{AuthMechanism, AuthMechanismFactory, AuthState};
use pgwire::api::auth::{
    protocol_negotiation, save_startup_parameters_to_metadata, AuthDriver, AuthSource, LoginInfo,
    Password, ServerParameterProvider, StartupHandler,
};
use pgwire::api::{ClientInfo, METADATA_USER};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::PasswordMessageFamily;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

/// How clients prove who they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may connect (the default; fine on loopback).
    #[default]
    Trust,
    /// The password sent in clear text (use only over trusted networks).
    Cleartext(String),
    /// The password as PostgreSQL's MD5 challenge.
    Md5(String),
}

/// Answers every user with the one configured password.
#[derive(Debug)]
struct OnePassword {
    password: String,
    md5: bool,
}

#[async_trait]
impl AuthSource for OnePassword {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        if !self.md5 {
            return Ok(Password::new(None, self.password.as_bytes().to_vec()));
        }
        let salt: [u8; 4] = rand::random();
        let user = login.user().unwrap_or_default();
        let hashed = hash_md5_password(user, &self.password, &salt);
        Ok(Password::new(Some(salt.to_vec()), hashed.into_bytes()))
    }
}

/// Lets everyone in.
struct TrustMechanism;

#[async_trait]
impl AuthMechanism for TrustMechanism {
    async fn begin(&mut self, _client: &(dyn ClientInfo + Send + Sync)) -> PgWireResult<AuthState> {
        Ok(AuthState::Ok {
            final_message: None,
            identity: None,
        })
    }

    async fn next(
        &mut self,
        _client: &(dyn ClientInfo + Send + Sync),
        _message: PasswordMessageFamily,
    ) -> PgWireResult<AuthState> {
        Err(PgWireError::NoAuthenticationInProgress)
    }
}

struct Trust;

impl AuthMechanismFactory for Trust {
    fn create(&self) -> Box<dyn AuthMechanism> {
        Box::new(TrustMechanism)
    }
}

/// The parameters sent at startup.
#[derive(Debug)]
pub(crate) struct ServerParams(pub Vec<(String, String)>);

impl ServerParameterProvider for ServerParams {
    fn server_parameters<C: ClientInfo>(&self, client: &C) -> Option<HashMap<String, String>> {
        let mut p: HashMap<String, String> = self.0.iter().cloned().collect();
        let meta = client.metadata();
        if let Some(user) = meta.get(METADATA_USER) {
            p.insert("session_authorization".into(), user.clone());
        }
        if let Some(app) = meta.get("application_name") {
            p.insert("application_name".into(), app.clone());
        }
        if let Some(s) = client.session_extensions().get::<SessionCell>() {
            let s = s.0.lock().expect("session lock");
            for name in ["DateStyle", "TimeZone", "IntervalStyle", "application_name"] {
                if let Some(v) = s.get(name) {
                    p.insert(name.into(), v.to_owned());
                }
            }
        }
        Some(p)
    }
}

/// The startup handler.
pub struct Startup<D> {
    driver: AuthDriver<ServerParams>,
    mechanism: Box<dyn AuthMechanismFactory>,
    core: Arc<Core<D>>,
}

impl<D> Debug for Startup<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Startup").finish_non_exhaustive()
    }
}

impl<D: Db> Startup<D> {
    pub(crate) fn new(auth: &Auth, core: Arc<Core<D>>) -> Self {
        let mechanism: Box<dyn AuthMechanismFactory> = match auth {
            Auth::Trust => Box::new(Trust),
            Auth::Cleartext(p) => Box::new(CleartextPasswordAuth::new(Arc::new(OnePassword {
                password: p.clone(),
                md5: false,
            }))),
            Auth::Md5(p) => Box::new(Md5PasswordAuth::new(Arc::new(OnePassword {
                password: p.clone(),
                md5: true,
            }))),
        };
        Startup {
            driver: AuthDriver::new(ServerParams(core.server_params.clone())),
            mechanism,
            core,
        }
    }
}

#[async_trait]
impl<D: Db> StartupHandler for Startup<D> {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcome = match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let params: BTreeMap<String, String> =
                    startup.parameters.clone().into_iter().collect();
                let session =
                    Session::new(&self.core.server_params, &params).map_err(|mut e| {
                        e.severity = "FATAL".into();
                        PgWireError::UserError(e)
                    })?;
                client
                    .session_extensions()
                    .insert(SessionCell(Mutex::new(session)));
                self.driver
                    .begin_authentication(client, self.mechanism.create())
                    .await?
            }
            PgWireFrontendMessage::PasswordMessageFamily(m) => {
                self.driver.advance_authentication(client, m).await?
            }
            _ => return Ok(()),
        };
        match outcome {
            AuthOutcome::InProgress => Ok(()),
            AuthOutcome::Authenticated { final_message, .. } => {
                self.driver
                    .complete_authentication(client, final_message)
                    .await
            }
        }
    }
}
