//! Secure Boot, kernel lockdown and module signatures: will the kernel
//! load an rkvm.ko that nobody signed?
//!
//! It refuses when `module.sig_enforce` is on (the `module.sig_enforce=1`
//! parameter, or a kernel built with CONFIG_MODULE_SIG_FORCE): insmod says
//! "Key was rejected by service" (EKEYREJECTED). Otherwise lockdown decides
//! (`integrity` or `confidentiality` refuse unsigned modules with EPERM,
//! "Operation not permitted"); Debian, Ubuntu and Fedora lock their kernels
//! down when the machine booted with Secure Boot on. A module signed with
//! a Machine Owner Key (MOK) enrolled through shim loads.

use super::{Finding, Inputs, Status};

const SECURE_BOOT: &str = "Secure Boot";
const UNSIGNED: &str = "unsigned modules";

/// The EFI variable that says whether the firmware booted with Secure
/// Boot on (its GUID is EFI_GLOBAL_VARIABLE's).
pub const SECURE_BOOT_VAR: &str = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Secure Boot on or off, and how that was learned; `None` if nothing said.
pub fn secure_boot_state(i: &Inputs) -> (Option<bool>, &'static str) {
    if let Some(out) = &i.mokutil {
        if out.contains("SecureBoot enabled") {
            return (Some(true), "mokutil --sb-state");
        }
        if out.contains("SecureBoot disabled") {
            return (Some(false), "mokutil --sb-state");
        }
    }
    // Four bytes of attributes, then the value: 1 is on.
    if let Some(var) = &i.secure_boot_var
        && var.len() >= 5
    {
        return (Some(var.last() == Some(&1)), "the SecureBoot EFI variable");
    }
    if !i.efi {
        return (Some(false), "no /sys/firmware/efi: the machine booted through a legacy BIOS");
    }
    (None, "")
}

pub fn secure_boot(i: &Inputs) -> Finding {
    match secure_boot_state(i) {
        (Some(true), how) => Finding::new(Status::Ok, SECURE_BOOT, format!("on ({how}); what it means for rkvm.ko is below")),
        (Some(false), how) => Finding::new(Status::Ok, SECURE_BOOT, format!("off ({how})")),
        (None, _) => Finding::new(
            Status::Unknown,
            SECURE_BOOT,
            "the machine booted through UEFI, but neither mokutil nor the SecureBoot variable answered",
        )
        .say("install mokutil and run this again:")
        .run("sudo apt-get install mokutil   # Fedora: sudo dnf install mokutil"),
    }
}

/// The lockdown mode, the bracketed word of /sys/kernel/security/lockdown.
fn lockdown(i: &Inputs) -> Option<&str> {
    let text = i.lockdown.as_deref()?;
    let start = text.find('[')? + 1;
    let end = start + text.get(start..)?.find(']')?;
    text.get(start..end)
}

fn config_on(i: &Inputs, name: &str) -> bool {
    let line = format!("CONFIG_{name}=y");
    i.headers.as_ref().and_then(|h| h.config.as_deref()).is_some_and(|c| c.lines().any(|l| l == line))
}

pub fn unsigned_modules(i: &Inputs) -> Finding {
    let enforced = i.sig_enforce.as_deref().is_some_and(|v| v.trim() == "Y");
    let mode = lockdown(i);
    let refused_by = if enforced || config_on(i, "MODULE_SIG_FORCE") {
        Some("module.sig_enforce is on: insmod of an unsigned module says \"Key was rejected by service\" (EKEYREJECTED)".to_string())
    } else if let Some(m @ ("integrity" | "confidentiality")) = mode {
        Some(format!("kernel lockdown is `{m}`: insmod of an unsigned module says \"Operation not permitted\" (EPERM)"))
    } else {
        None
    };
    let secure_boot = secure_boot_state(i).0;
    match refused_by {
        Some(why) => {
            if let Some(ko) = i.kos.iter().find(|k| k.signed == Some(true) && k.release.as_deref() == Some(i.release.as_str())) {
                return Finding::new(Status::Warn, UNSIGNED, format!("refused ({why})"))
                    .say(format!("{} is signed: it loads if its key is enrolled (`mokutil --list-enrolled`)", ko.path));
            }
            sign(i, Finding::new(Status::Problem, UNSIGNED, format!("refused: {why}")))
        }
        None if secure_boot == Some(true) && mode.is_none() => sign(
            i,
            Finding::new(
                Status::Warn,
                UNSIGNED,
                "probably refused: Secure Boot is on, and Debian, Ubuntu and Fedora then lock the kernel down (/sys/kernel/security/lockdown not readable)",
            ),
        ),
        None if i.sig_enforce.is_none() && !config_on(i, "MODULE_SIG") => {
            Finding::new(Status::Ok, UNSIGNED, "load (this kernel checks no module signatures)")
        }
        None => Finding::new(
            Status::Ok,
            UNSIGNED,
            format!(
                "load (module.sig_enforce off, lockdown `{}`); rkvm.ko taints the kernel (E: unsigned, O: out of tree), which is harmless",
                mode.unwrap_or("none")
            ),
        ),
    }
}

/// How to sign rkvm.ko with a MOK, and how dkms does it by itself.
fn sign(i: &Inputs, f: Finding) -> Finding {
    let hash = i
        .headers
        .as_ref()
        .and_then(|h| h.config.as_deref())
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("CONFIG_MODULE_SIG_HASH=")))
        .map(|h| h.trim_matches('"').to_string())
        .unwrap_or_else(|| "sha256".into());
    let sign_file = match super::distro(&i.os_release) {
        Some("debian") => "/usr/src/linux-headers-$(uname -r)/scripts/sign-file",
        Some("fedora") => "/usr/src/kernels/$(uname -r)/scripts/sign-file",
        _ => "/lib/modules/$(uname -r)/build/scripts/sign-file",
    };
    let f = match &i.headers {
        Some(h) if !h.sign_file => f.say(format!("({}/scripts/sign-file, used below, is missing: install the headers)", h.dir)),
        _ => f,
    };
    f.say("sign rkvm.ko with a Machine Owner Key (MOK): make a key, enroll it (shim's MokManager asks at the next boot),")
        .say("then sign the module after every build:")
        .run("openssl req -new -x509 -newkey rsa:2048 -nodes -days 36500 -subj '/CN=rkvm lab module key/' -outform DER -keyout MOK.priv -out MOK.der")
        .run("sudo mokutil --import MOK.der   # choose a one-time password")
        .run("sudo reboot                     # MokManager: Enroll MOK, Continue, Yes, the password")
        .run(format!("{sign_file} {hash} MOK.priv MOK.der target/kmod/rkvm/rkvm.ko"))
        .say("dkms signs the modules it builds by itself, with the key and certificate /etc/dkms/framework.conf names")
        .say("(mok_signing_key, mok_certificate): on Debian 12 /var/lib/dkms/mok.key and mok.pub, made at its first build")
        .say("(enroll them: sudo mokutil --import /var/lib/dkms/mok.pub); on Ubuntu /var/lib/shim-signed/mok/MOK.priv and MOK.der.")
}

#[cfg(test)]
mod tests {
    use super::super::fake::{self, text};
    use super::super::{Headers, Ko};
    use super::*;

    #[test]
    fn secure_boot_from_mokutil_the_variable_or_the_boot() {
        let on = Inputs { mokutil: Some("SecureBoot enabled\n".into()), ..fake::intel() };
        assert_eq!(secure_boot_state(&on).0, Some(true));
        let var_on = Inputs { mokutil: None, secure_boot_var: Some(vec![6, 0, 0, 0, 1]), ..fake::intel() };
        assert_eq!(secure_boot_state(&var_on), (Some(true), "the SecureBoot EFI variable"));
        let var_off = Inputs { secure_boot_var: Some(vec![6, 0, 0, 0, 0]), ..var_on.clone() };
        assert_eq!(secure_boot_state(&var_off).0, Some(false));
        let bios = Inputs { mokutil: Some("EFI variables are not supported on this system\n".into()), efi: false, ..fake::intel() };
        assert_eq!(secure_boot_state(&bios).0, Some(false));
        let unknown = Inputs { mokutil: None, secure_boot_var: None, ..fake::intel() };
        assert_eq!(secure_boot(&unknown).status, Status::Unknown);
    }

    #[test]
    fn secure_boot_with_sig_enforce_refuses_unsigned_modules() {
        let i = Inputs {
            mokutil: Some("SecureBoot enabled\n".into()),
            lockdown: Some("none [integrity] confidentiality\n".into()),
            sig_enforce: Some("Y\n".into()),
            ..fake::intel()
        };
        let f = unsigned_modules(&i);
        assert_eq!(f.status, Status::Problem);
        let t = text(&f);
        assert!(t.contains("EKEYREJECTED") && t.contains("mokutil --import MOK.der"), "{t}");
        assert!(t.contains("/usr/src/linux-headers-$(uname -r)/scripts/sign-file sha256 MOK.priv MOK.der"), "{t}");
        assert!(t.contains("/var/lib/dkms/mok.pub") && t.contains("mok_signing_key"), "{t}");
        // Lockdown alone refuses too, with another errno.
        let locked = Inputs { sig_enforce: Some("N".into()), ..i.clone() };
        assert!(text(&unsigned_modules(&locked)).contains("EPERM"));
        // A signed module of this kernel may well load.
        let ko = Ko { path: "rkvm.ko".into(), release: Some(fake::RELEASE.into()), signed: Some(true) };
        let signed = Inputs { kos: vec![ko], ..i };
        assert_eq!(unsigned_modules(&signed).status, Status::Warn);
    }

    #[test]
    fn the_kernel_config_can_force_signatures() {
        let mut i = fake::intel();
        let headers = i.headers.take().unwrap();
        let config = headers.config.clone().unwrap().replace("sha256", "sha512") + "CONFIG_MODULE_SIG_FORCE=y\n";
        let i = Inputs {
            headers: Some(Headers { config: Some(config), ..headers }),
            os_release: "ID=fedora\n".into(),
            ..i
        };
        let t = text(&unsigned_modules(&i));
        assert_eq!(unsigned_modules(&i).status, Status::Problem);
        assert!(t.contains("/usr/src/kernels/$(uname -r)/scripts/sign-file sha512 MOK.priv"), "{t}");
    }

    #[test]
    fn secure_boot_without_a_readable_lockdown_is_a_warning() {
        let i = Inputs { mokutil: Some("SecureBoot enabled\n".into()), lockdown: None, sig_enforce: Some("N".into()), ..fake::intel() };
        assert_eq!(unsigned_modules(&i).status, Status::Warn);
        let plain = Inputs { lockdown: None, sig_enforce: None, headers: None, ..fake::intel() };
        assert!(unsigned_modules(&plain).summary.contains("checks no module signatures"));
        assert_eq!(unsigned_modules(&fake::intel()).status, Status::Ok);
    }
}
