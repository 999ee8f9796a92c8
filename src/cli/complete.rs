//! Shell completion. `completion bash|zsh` prints a script for the
//! standalone binary; installed as `kubectl_complete-manifold`, the binary
//! answers kubectl's plugin completion: it gets the words typed after
//! `kubectl manifold` (the last one being completed) and prints one
//! candidate per line, then cobra's `:<directive>`. Names of Connections
//! and Workspaces come from the cluster, as the user of the kubeconfig.

use clap::{Arg, Command};
use kube::api::{Api, ListParams};
use manifold::api::{Connection, SECRET_LABEL, Workspace, WorkspaceConnection};

use super::KubeFlags;

/// Cobra's ShellCompDirectiveNoFileComp: no file names.
const NO_FILES: u8 = 4;
/// Cobra's ShellCompDirectiveDefault: the shell may offer files.
const FILES: u8 = 0;

/// What a completion needs from the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    Connections,
    Workspaces,
    Attachments,
    Secrets,
    Namespaces,
    Contexts,
}

/// What to offer for the last word.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    Words(Vec<String>),
    Names(Names),
    Files,
}

/// Decides what the last of `words` completes to, from the command tree.
pub fn offer(root: &Command, words: &[String]) -> Offer {
    let (current, before) = match words.split_last() {
        Some((last, rest)) => (last.as_str(), rest),
        None => ("", &[][..]),
    };
    let Position { cmd, path, positionals, expecting } = Position::of(root, before);
    if let Some(arg) = expecting {
        return value_offer(&arg);
    }
    if current.starts_with('-') {
        let flags = cmd.get_arguments().filter(|a| !a.is_hide_set()).filter_map(|a| a.get_long().map(|l| format!("--{l}"))).collect();
        return Offer::Words(flags);
    }
    let subcommands: Vec<String> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| s.get_name().to_string()).collect();
    if !subcommands.is_empty() && positionals.is_empty() {
        return Offer::Words(subcommands);
    }
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match (path.as_slice(), positionals.len()) {
        (["get"], 0) => Offer::Words(["connection", "workspace", "attachment"].map(String::from).to_vec()),
        (["get"], 1) => match super::get::kind(&positionals[0]) {
            Ok(super::get::Kind::Connection) => Offer::Names(Names::Connections),
            Ok(super::get::Kind::Workspace) => Offer::Names(Names::Workspaces),
            Ok(super::get::Kind::Attachment) => Offer::Names(Names::Attachments),
            Err(_) => Offer::Words(vec![]),
        },
        (["attach" | "detach" | "test"], 0) | (["delete", "connection"], 0) => Offer::Names(Names::Connections),
        (["import", ..], _) => Offer::Files,
        _ => match cmd.get_positionals().nth(positionals.len()) {
            Some(arg) if !arg.get_possible_values().is_empty() => value_offer(arg),
            _ => Offer::Words(vec![]),
        },
    }
}

/// Where the words before the one being completed leave the command line.
struct Position {
    /// The command or subcommand they reach.
    cmd: Command,
    /// The names of the subcommands on the way there.
    path: Vec<String>,
    /// The positional arguments given so far.
    positionals: Vec<String>,
    /// The flag whose value the word being completed is, if any.
    expecting: Option<Arg>,
}

impl Position {
    /// Walks `words` down the command tree from `root`. A flag that takes a
    /// separate value (`--flag value`, `-f value`) makes the next word its
    /// value; before any positional, a subcommand's name descends into it;
    /// any other word is a positional.
    fn of(root: &Command, words: &[String]) -> Position {
        let mut cmd = root.clone();
        cmd.build();
        let mut path: Vec<String> = Vec::new();
        let mut positionals: Vec<String> = Vec::new();
        let mut expecting: Option<Arg> = None;
        for word in words {
            if expecting.take().is_some() {
                continue;
            }
            if let Some(long) = word.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, _)) => (n, true),
                    None => (long, false),
                };
                if let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(name))
                    && takes_value(arg)
                    && !inline
                    && !optional_value(arg)
                {
                    expecting = Some(arg.clone());
                }
            } else if let Some(short) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
                let c = short.chars().next().unwrap_or_default();
                if let Some(arg) = cmd.get_arguments().find(|a| a.get_short() == Some(c))
                    && takes_value(arg)
                    && short.len() == 1
                {
                    expecting = Some(arg.clone());
                }
            } else if positionals.is_empty()
                && let Some(sub) = cmd.find_subcommand(word).cloned()
            {
                path.push(sub.get_name().to_string());
                cmd = sub;
            } else {
                positionals.push(word.clone());
            }
        }
        Position { cmd, path, positionals, expecting }
    }
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values())
}

/// `--dry-run` and `--wait` take their value only after `=`.
fn optional_value(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.min_values() == 0)
}

fn value_offer(arg: &Arg) -> Offer {
    match arg.get_id().as_str() {
        "workspaces" => Offer::Names(Names::Workspaces),
        "namespace" => Offer::Names(Names::Namespaces),
        "context" => Offer::Names(Names::Contexts),
        "credentials" => Offer::Names(Names::Secrets),
        "plugin" => Offer::Words(["postgres", "fdw", "steampipe/"].map(String::from).to_vec()),
        "kubeconfig" => Offer::Files,
        _ => Offer::Words(arg.get_possible_values().iter().filter(|v| !v.is_hide_set()).map(|v| v.get_name().to_string()).collect()),
    }
}

/// kubectl's connection flags as typed among `words`, so that names come
/// from the cluster and namespace the command will act on.
fn flags_in(words: &[String]) -> KubeFlags {
    let mut flags = KubeFlags::default();
    let mut i = 0;
    while i < words.len() {
        let (name, value) = match words[i].split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (words[i].as_str(), words.get(i + 1).cloned()),
        };
        let slot = match name {
            "--kubeconfig" => {
                flags.kubeconfig = value.clone().map(Into::into);
                None
            }
            "--context" => Some(&mut flags.context),
            "--cluster" => Some(&mut flags.cluster),
            "--user" => Some(&mut flags.user),
            "-n" | "--namespace" => Some(&mut flags.namespace),
            "--as" => Some(&mut flags.as_user),
            _ => {
                i += 1;
                continue;
            }
        };
        if let Some(slot) = slot {
            *slot = value;
        }
        i += 1;
    }
    flags
}

async fn names(what: Names, flags: &KubeFlags) -> Vec<String> {
    use kube::ResourceExt;
    if what == Names::Contexts {
        let config = match &flags.kubeconfig {
            Some(path) => kube::config::Kubeconfig::read_from(path).ok(),
            None => kube::config::Kubeconfig::read().ok(),
        };
        return config.map(|c| c.contexts.into_iter().map(|c| c.name).collect()).unwrap_or_default();
    }
    let Ok((client, ns)) = flags.client().await else { return vec![] };
    let params = ListParams::default();
    let listed: Result<Vec<String>, kube::Error> = match what {
        Names::Connections => {
            Api::<Connection>::namespaced(client, &ns).list_metadata(&params).await.map(|l| l.items.iter().map(|o| o.name_any()).collect())
        }
        Names::Workspaces => {
            Api::<Workspace>::namespaced(client, &ns).list_metadata(&params).await.map(|l| l.items.iter().map(|o| o.name_any()).collect())
        }
        Names::Attachments => Api::<WorkspaceConnection>::namespaced(client, &ns)
            .list_metadata(&params)
            .await
            .map(|l| l.items.iter().map(|o| o.name_any()).collect()),
        Names::Secrets => Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, &ns)
            .list_metadata(&ListParams::default().labels(&format!("{SECRET_LABEL}=true")))
            .await
            .map(|l| l.items.iter().map(|o| o.name_any()).collect()),
        Names::Namespaces => Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
            .list_metadata(&params)
            .await
            .map(|l| l.items.iter().map(|o| o.name_any()).collect()),
        Names::Contexts => Ok(vec![]),
    };
    listed.unwrap_or_default()
}

/// Prints the candidates for the last of `words`, then the directive.
pub async fn answer(root: &Command, words: &[String]) {
    let current = words.last().map(String::as_str).unwrap_or("");
    let (candidates, directive) = match offer(root, words) {
        Offer::Words(words) => (words, NO_FILES),
        Offer::Names(what) => (names(what, &flags_in(words)).await, NO_FILES),
        Offer::Files => (vec![], FILES),
    };
    for candidate in candidates.iter().filter(|c| c.starts_with(current)) {
        println!("{candidate}");
    }
    println!(":{directive}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn offer_for(line: &str) -> Offer {
        let mut words: Vec<String> = line.split(' ').map(String::from).collect();
        if line.is_empty() {
            words = vec![String::new()];
        }
        offer(&crate::Cli::command(), &words)
    }

    fn words(offer: Offer) -> Vec<String> {
        match offer {
            Offer::Words(w) => w,
            other => panic!("expected words, got {other:?}"),
        }
    }

    #[test]
    fn verbs_then_kinds_then_names() {
        let verbs = words(offer_for(""));
        for verb in ["create", "attach", "detach", "test", "get", "delete", "import", "completion"] {
            assert!(verbs.contains(&verb.to_string()), "{verb} in {verbs:?}");
        }
        assert!(!verbs.iter().any(|v| v.starts_with("__")), "hidden commands stay hidden");
        assert_eq!(words(offer_for("get ")), ["connection", "workspace", "attachment"]);
        assert_eq!(offer_for("get conn "), Offer::Names(Names::Connections));
        assert_eq!(offer_for("get mws s"), Offer::Names(Names::Workspaces));
        assert_eq!(offer_for("attach "), Offer::Names(Names::Connections));
        assert_eq!(offer_for("delete connection "), Offer::Names(Names::Connections));
        assert_eq!(words(offer_for("create ")), ["connection", "help"]);
    }

    #[test]
    fn flag_values_come_from_the_flag() {
        assert_eq!(offer_for("attach sales --workspace "), Offer::Names(Names::Workspaces));
        assert_eq!(offer_for("attach sales -n "), Offer::Names(Names::Namespaces));
        assert_eq!(offer_for("-n payments attach sales -w a"), Offer::Names(Names::Workspaces));
        assert_eq!(offer_for("create connection x --credentials "), Offer::Names(Names::Secrets));
        assert_eq!(words(offer_for("get conn -o ")), ["yaml", "json", "name"]);
        assert_eq!(words(offer_for("completion ")), ["bash", "zsh", "fish"]);
        assert_eq!(offer_for("import steampipe "), Offer::Files);
        assert!(words(offer_for("attach sales --")).contains(&"--workspace".to_string()));
        assert!(words(offer_for("attach sales --")).contains(&"--kubeconfig".to_string()), "kubectl's flags are global");
    }

    #[test]
    fn connection_flags_are_read_from_the_words() {
        let words: Vec<String> = ["-n", "payments", "--context=dev", "get", "conn", ""].map(String::from).to_vec();
        let flags = flags_in(&words);
        assert_eq!(flags.namespace.as_deref(), Some("payments"));
        assert_eq!(flags.context.as_deref(), Some("dev"));
    }
}
