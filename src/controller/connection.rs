//! The connection reconciler: resolves the plugin, schema and credentials,
//! and lists the workspaces that use the connection.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::status::{self, Outcome};
use super::{Context, Error, resolve};
use crate::api::{Connection, ConnectionStatus, Reason, WorkspaceUse, conditions};
use crate::plugins;

pub async fn reconcile(conn: Arc<Connection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let outcome = match resolve::connection(&ctx.stores, &conn) {
        Ok(_) => Outcome::new(Reason::Valid, "the plugin, schema and credentials resolve"),
        Err(f) => Outcome::new(f.reason, f.message),
    };
    report(&conn, &ctx, &outcome).await?;
    Ok(Action::await_change())
}

fn workspaces(ctx: &Context, conn: &Connection) -> Vec<WorkspaceUse> {
    let (ns, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
    let mut list: Vec<WorkspaceUse> = ctx
        .stores
        .attachments_where(&ns, |a| a.spec.connection == name)
        .iter()
        .map(|a| {
            let status = a.status.as_ref();
            let ready = status.is_some_and(|s| conditions::is_ready(&s.conditions));
            WorkspaceUse {
                name: a.spec.workspace.clone(),
                schema: status.and_then(|s| s.schema.clone()).unwrap_or_default(),
                state: if ready {
                    "Ready".to_owned()
                } else {
                    status.and_then(|s| status::ready_reason(&s.conditions)).unwrap_or("Pending").to_owned()
                },
            }
        })
        .collect();
    list.sort();
    list
}

async fn report(conn: &Connection, ctx: &Context, outcome: &Outcome) -> Result<(), Error> {
    let current = conn.status.as_ref();
    let generation = conn.meta().generation;
    let workspaces = workspaces(ctx, conn);
    let previous_reason = current.and_then(|s| status::ready_reason(&s.conditions)).map(str::to_owned);
    let status = ConnectionStatus {
        observed_generation: generation,
        conditions: status::merge_conditions(
            current.map(|s| s.conditions.as_slice()).unwrap_or_default(),
            &outcome.conditions(),
            generation,
        ),
        plugin: Some(plugins::label(&conn.spec.plugin)),
        schema: resolve::connection_schema(conn).ok(),
        test: current.and_then(|s| s.test.clone()),
        workspace_count: workspaces.iter().filter(|w| w.state == "Ready").count() as i32,
        workspaces,
    };
    status::write(ctx, conn, current, &status).await?;
    if !outcome.is_ready() && previous_reason.as_deref() != Some(outcome.reason.as_str()) {
        status::event(ctx, conn, true, outcome.reason.as_str(), "Resolve", outcome.message.clone()).await;
    }
    Ok(())
}
