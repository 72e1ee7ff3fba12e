//! The `turnstile` binary: the whole server around a built-in application
//! (`--app demo|hello|environ|broken`), with every layer;
//! `turnstile --help` lists the settings.

mod apps;

use std::process::ExitCode;

use turnstile::SharedApp;
use turnstile::config::AppName;

fn main() -> ExitCode {
    turnstile::main(|settings| built_in(settings.server.app))
}

/// The built-in application `--app` names.
fn built_in(app: AppName) -> SharedApp {
    match app {
        AppName::Demo => {
            apps::load_demo();
            SharedApp::new(apps::demo)
        }
        AppName::Hello => SharedApp::new(apps::hello),
        AppName::Environ => SharedApp::new(apps::environ),
        AppName::Broken => apps::load_broken(),
    }
}
