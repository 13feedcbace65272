//! The processor: does it have VMX or SVM, did the firmware leave it
//! enabled, and does another hypervisor hold it?
//!
//! Intel: CPUID.1:ECX.VMX says the processor has VMX; IA32_FEATURE_CONTROL
//! (MSR 0x3A) says whether the firmware allows it: "If the lock bit is
//! set, VMXON is not allowed unless the appropriate enable bit is set" (bit
//! 2, VMXON outside SMX; SDM Vol. 3C, 24.7 "Enabling and Entering VMX
//! Operation"). Since Linux 5.6 the kernel drops the `vmx` flag from
//! /proc/cpuinfo when the firmware locked VMX off, and logs "VMX (outside
//! TXT) disabled by BIOS". AMD: CPUID Fn8000_0001 ECX.SVM, and VM_CR.SVMDIS
//! (MSR 0xC001_0114 bit 4), which firmware sets to forbid setting
//! EFER.SVME (APM Vol. 2, 15.4 "Enabling SVM"); the kernel keeps the `svm`
//! flag then, and `kvm_amd` refuses to load.
//!
//! rkvm.ko makes the same decisions at load (`check_support` in
//! kmod/src/arch/vmx/mod.rs, `check` in kmod/src/arch/svm/mod.rs).

use super::{Finding, Inputs, Msr, Status};

const CHECK: &str = "hardware virtualization";
const OTHERS: &str = "other hypervisors";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    /// AMD, and Hygon, whose processors have AMD's SVM.
    Amd,
    Other(String),
}

/// The processor's vendor, from /proc/cpuinfo's `vendor_id`.
pub fn vendor(cpuinfo: &str) -> Vendor {
    let id = field(cpuinfo, "vendor_id").unwrap_or("");
    match id {
        "GenuineIntel" => Vendor::Intel,
        "AuthenticAMD" | "HygonGenuine" => Vendor::Amd,
        other => Vendor::Other(other.to_string()),
    }
}

/// The first value of a `name : value` line of /proc/cpuinfo.
fn field<'a>(cpuinfo: &'a str, name: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

fn has_flag(cpuinfo: &str, flag: &str) -> bool {
    field(cpuinfo, "flags").is_some_and(|f| f.split_whitespace().any(|w| w == flag))
}

/// A line of the kernel log saying the firmware disabled the extension:
/// "x86/cpu: VMX (outside TXT) disabled by BIOS", "kvm_intel: VMX not
/// enabled (by BIOS) in MSR_IA32_FEAT_CTL on CPU 0", "kvm_amd: SVM
/// disabled (by BIOS) in MSR_VM_CR on CPU 0", or 6.1's "kvm: disabled by
/// bios".
fn kernel_says_disabled(i: &Inputs, ext: &str) -> Option<String> {
    let log = i.dmesg.as_deref()?;
    log.lines()
        .find(|l| {
            let l = l.to_lowercase();
            l.contains("by bios") && (l.contains(ext) || l.contains("kvm: disabled"))
        })
        .map(|l| l.trim().to_string())
}

fn loaded<'a>(i: &'a Inputs, name: &str) -> Option<&'a super::Module> {
    i.modules.iter().find(|m| m.name == name)
}

pub fn virtualization(i: &Inputs) -> Finding {
    let guest = has_flag(&i.cpuinfo, "hypervisor");
    match vendor(&i.cpuinfo) {
        Vendor::Intel => intel(i, guest),
        Vendor::Amd => amd(i, guest),
        Vendor::Other(id) => Finding::new(
            Status::Problem,
            CHECK,
            format!("the processor is neither Intel's nor AMD's (vendor_id `{id}`); rkvm needs Intel VT-x (VMX) or AMD-V (SVM)"),
        ),
    }
}

fn intel(i: &Inputs, guest: bool) -> Finding {
    let fc = match i.feature_control {
        Msr::Value(v) => Some(v),
        _ => None,
    };
    // Locked (bit 0) without VMXON outside SMX (bit 2): SDM Vol. 3C, 24.7.
    let locked_off = fc.is_some_and(|v| v & 1 != 0 && v & 4 == 0);
    let said = kernel_says_disabled(i, "vmx");
    let vm = if guest { ", in a virtual machine that offers nested VMX" } else { "" };
    if has_flag(&i.cpuinfo, "vmx") && !locked_off && said.is_none() {
        let how = match fc {
            Some(v) => format!("IA32_FEATURE_CONTROL {v:#x}: locked with VMXON outside SMX allowed, or unlocked"),
            None if field(&i.cpuinfo, "vmx flags").is_some() => "Linux lists its `vmx flags`".into(),
            None => "cpuinfo flag vmx".into(),
        };
        return Finding::new(Status::Ok, CHECK, format!("Intel VT-x (VMX), enabled ({how}){vm}"));
    }
    if guest && !has_flag(&i.cpuinfo, "vmx") {
        return nested(i, "VMX");
    }
    if locked_off || said.is_some() {
        let why = match (fc, said) {
            (Some(v), _) if locked_off => format!(
                "IA32_FEATURE_CONTROL (MSR 0x3A) is {v:#x}: locked (bit 0) without VMXON outside SMX (bit 2), so VMXON faults (SDM Vol. 3C, 24.7)"
            ),
            (_, Some(line)) => format!("the kernel says \"{line}\""),
            _ => String::new(),
        };
        return Finding::new(Status::Problem, CHECK, format!("the firmware disabled Intel VT-x: {why}"))
            .say("enable \"Intel Virtualization Technology\" (VT-x) in the firmware setup, then power the machine off and on:")
            .say("the MSR stays locked until the processor is reset. Until then rkvm.ko's load fails with EOPNOTSUPP")
            .say("(\"Operation not supported\"; its log: \"VMX (IA32_FEATURE_CONTROL is locked without VMXON outside SMX ...)\").");
    }
    Finding::new(
        Status::Problem,
        CHECK,
        "no `vmx` in /proc/cpuinfo on this Intel processor: it has no VT-x, or the firmware disabled it (Linux then hides the flag)",
    )
    .say("enable \"Intel Virtualization Technology\" (VT-x) in the firmware setup if it has the setting")
    .say(msr_advice(i.feature_control, "IA32_FEATURE_CONTROL (MSR 0x3A)"))
}

fn amd(i: &Inputs, guest: bool) -> Finding {
    let vm_cr = match i.vm_cr {
        Msr::Value(v) => Some(v),
        _ => None,
    };
    // VM_CR bit 4, SVMDIS (APM Vol. 2, 15.4 and 15.30.1).
    let svmdis = vm_cr.is_some_and(|v| v & (1 << 4) != 0);
    let said = kernel_says_disabled(i, "svm");
    let svm = has_flag(&i.cpuinfo, "svm");
    if guest && !svm {
        return nested(i, "SVM");
    }
    if svmdis || said.is_some() {
        let why = match (vm_cr, said) {
            (Some(v), _) if svmdis => format!(
                "VM_CR (MSR 0xC001_0114) is {v:#x}: SVMDIS (bit 4) is set{}, so EFER.SVME cannot be set (APM Vol. 2, 15.4)",
                if v & (1 << 3) != 0 { " and locked (bit 3)" } else { "" }
            ),
            (_, Some(line)) => format!("the kernel says \"{line}\""),
            _ => String::new(),
        };
        return Finding::new(Status::Problem, CHECK, format!("the firmware disabled AMD-V: {why}"))
            .say("enable \"SVM Mode\" (AMD-V) in the firmware setup. Until then rkvm.ko's load fails with EOPNOTSUPP")
            .say("(\"Operation not supported\"; its log: \"svm: AMD SVM is disabled by the firmware (BIOS)\").");
    }
    if !svm {
        return Finding::new(
            Status::Problem,
            CHECK,
            "no `svm` in /proc/cpuinfo on this AMD processor: it has no AMD-V, or the firmware hides it",
        )
        .say("enable \"SVM Mode\" (AMD-V) in the firmware setup if it has the setting");
    }
    let vm = if guest { ", in a virtual machine that offers nested SVM" } else { "" };
    if let Some(v) = vm_cr {
        return Finding::new(Status::Ok, CHECK, format!("AMD-V (SVM), enabled (VM_CR {v:#x}: SVMDIS clear){vm}"));
    }
    if loaded(i, "kvm_amd").is_some() {
        return Finding::new(
            Status::Ok,
            CHECK,
            format!("AMD-V (SVM), enabled (kvm_amd is loaded, which it refuses where the firmware set VM_CR.SVMDIS){vm}"),
        );
    }
    Finding::new(
        Status::Unknown,
        CHECK,
        format!("AMD-V (SVM) is present{vm}; whether the firmware disabled it (VM_CR.SVMDIS, APM Vol. 2, 15.4) is not known"),
    )
    .say(msr_advice(i.vm_cr, "VM_CR (MSR 0xC001_0114)"))
}

/// How to read an MSR that could not be read.
fn msr_advice(msr: Msr, name: &str) -> String {
    match msr {
        Msr::NoDevice => format!("to tell, read {name}: `sudo modprobe msr`, then run this again as root"),
        Msr::NoPermission => format!("to tell, run this again as root: reading {name} through /dev/cpu/0/msr needs it"),
        Msr::Unreadable => format!("{name} could not be read: the firmware setup is the place to look"),
        Msr::Value(_) | Msr::NotRead => String::new(),
    }
}

/// A virtual machine whose hypervisor offers no VMX or SVM to its guests.
fn nested(i: &Inputs, ext: &str) -> Finding {
    let host = i.dmi_vendor.as_deref().unwrap_or("");
    let (module, what) = if ext == "VMX" { ("kvm_intel", "vmx") } else { ("kvm_amd", "svm") };
    let f = Finding::new(
        Status::Problem,
        CHECK,
        format!(
            "this is a virtual machine{} whose hypervisor offers it no {ext} (cpuinfo has `hypervisor`, not `{what}`): nested virtualization is off",
            if host.is_empty() { String::new() } else { format!(" ({host})") }
        ),
    )
    .say("run on the machine itself, or turn nested virtualization on in its hypervisor:");
    let kvm = |f: Finding| {
        f.say(format!("KVM: on the host, then reload {module} and restart the guest with the host's CPU model (QEMU"))
            .say("`-cpu host`, libvirt <cpu mode='host-passthrough'/>):")
            .run(format!("echo 'options {module} nested=1' | sudo tee /etc/modprobe.d/kvm-nested.conf"))
    };
    let vmware = |f: Finding| f.say("VMware: the VM's processor setting \"Virtualize Intel VT-x/EPT or AMD-V/RVI\"");
    let vbox = |f: Finding| f.say("VirtualBox, with the VM powered off:").run("VBoxManage modifyvm VM --nested-hw-virt on");
    let hyperv = |f: Finding| {
        f.say("Hyper-V, in PowerShell on the host, the VM off:").run("Set-VMProcessor -VMName VM -ExposeVirtualizationExtensions $true")
    };
    match host {
        "QEMU" | "KVM" => kvm(f),
        h if h.starts_with("VMware") => vmware(f),
        "innotek GmbH" | "Oracle Corporation" => vbox(f),
        "Microsoft Corporation" => hyperv(f),
        _ => hyperv(vbox(vmware(kvm(f)))),
    }
}

/// Only one hypervisor can be in VMX root operation, or own EFER.SVME, on a
/// CPU at a time. kmod/src/hardware.rs's `enable`, at rkvm's load:
/// - the backend's check on the loading CPU finds CR4.VMXE or EFER.SVME
///   set (`Unsupported::InUse`, logged as "vmx: VMX (CR4.VMXE is set) is in
///   use by another hypervisor (unload kvm_intel or kvm_amd first)"), no
///   backend is usable, and the load fails with `Errno::EOPNOTSUPP`;
/// - a CPU's `hardware_enable` fails (VMXON fails, or CR4.VMXE or
///   EFER.SVME is set on that CPU: "another hypervisor runs"), and the load
///   fails with `Errno::EBUSY` ("could not be turned on on every CPU").
pub fn other_hypervisors(i: &Inputs) -> Finding {
    let ext = match vendor(&i.cpuinfo) {
        Vendor::Amd => "SVM",
        _ => "VMX",
    };
    let mut parts: Vec<Finding> = Vec::new();
    for name in ["kvm_intel", "kvm_amd"] {
        if let Some(m) = loaded(i, name) {
            parts.push(kvm(i, m, ext));
        }
    }
    if loaded(i, "vboxdrv").is_some() {
        parts.push(
            Finding::new(Status::Warn, OTHERS, format!("VirtualBox's vboxdrv is loaded: it takes {ext} while its VMs run"))
                .say("stop its VMs before loading rkvm.ko, or unload it:")
                .run("sudo modprobe -r vboxnetadp vboxnetflt vboxdrv"),
        );
    }
    if loaded(i, "vmmon").is_some() {
        parts.push(
            Finding::new(Status::Warn, OTHERS, format!("VMware's vmmon is loaded: it takes {ext} while its VMs run"))
                .say("stop its VMs before loading rkvm.ko, or unload it:")
                .run("sudo modprobe -r vmmon"),
        );
    }
    let rkvm = loaded(i, "rkvm").is_some();
    if parts.is_empty() {
        let summary = if rkvm {
            format!("rkvm.ko is loaded and holds {ext}; no other hypervisor module (kvm_intel, kvm_amd, vboxdrv, vmmon)")
        } else {
            "none loaded (kvm_intel, kvm_amd, vboxdrv, vmmon)".into()
        };
        return Finding::new(Status::Ok, OTHERS, summary);
    }
    let status = parts.iter().map(|p| p.status).max().unwrap_or(Status::Ok);
    let summary = parts.iter().map(|p| p.summary.as_str()).collect::<Vec<_>>().join("; ");
    let mut f = Finding::new(status, OTHERS, summary);
    if rkvm {
        f.summary += "; rkvm.ko is loaded";
    }
    f.fix = parts.into_iter().flat_map(|p| p.fix).collect();
    f
}

/// Linux's kvm_intel or kvm_amd. It holds the extension from its load on
/// when kvm's `enable_virt_at_load` is on (Linux 6.12 on, the default),
/// else only while it has a VM (Linux 6.1 enables it at the first
/// KVM_CREATE_VM); a VM or an open /dev/kvm counts in its `refcnt`.
fn kvm(i: &Inputs, m: &super::Module, ext: &str) -> Finding {
    let name = m.name.as_str();
    let at_load = i.kvm_enable_virt_at_load.as_deref().is_some_and(|v| matches!(v.trim(), "Y" | "1"));
    let users = m.refcnt.unwrap_or(0);
    let mut f = if at_load || users > 0 {
        let why = if at_load {
            "kvm.enable_virt_at_load=Y turns it on when KVM loads".to_string()
        } else {
            format!("{users} user(s): VMs or open /dev/kvm files")
        };
        Finding::new(Status::Problem, OTHERS, format!("{name} holds {ext} ({why})"))
            .say("only one hypervisor can be in VMX root operation (own EFER.SVME) on a CPU at a time, so rkvm.ko's")
            .say(format!("load fails with EOPNOTSUPP (\"{ext} ... is in use by another hypervisor\"), or EBUSY if {ext} is taken on another CPU"))
    } else {
        Finding::new(Status::Warn, OTHERS, format!("{name} is loaded, idle: KVM turns {ext} on only while it has a VM"))
            .say("rkvm.ko loads now; then Linux KVM's VMs fail to start (KVM_CREATE_VM: EBUSY) until `sudo rmmod rkvm`,")
            .say("and a KVM VM started first keeps rkvm.ko from loading; to avoid both, unload KVM:")
    };
    if m.builtin {
        f = f.say(format!("{name} is built into this kernel and cannot be unloaded: run no KVM VM while rkvm.ko is loaded"));
        if i.kvm_enable_virt_at_load.is_some() {
            f = f.say("and boot with kvm.enable_virt_at_load=0 on the kernel's command line");
        }
        return f;
    }
    if users > 0 {
        f = f.say("stop the VMs that use it first (`virsh list`, QEMU processes), then:");
    }
    f = f.run(format!("sudo modprobe -r {name} kvm"));
    if at_load {
        f = f.say("or keep KVM loaded but idle, as on Linux before 6.12:").run(format!(
            "sudo modprobe -r {name} kvm && sudo modprobe kvm enable_virt_at_load=0 && sudo modprobe {name}"
        ));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::super::fake::{self, module, text};
    use super::*;

    #[test]
    fn vmx_enabled_by_the_firmware() {
        let f = virtualization(&fake::intel());
        assert_eq!(f.status, Status::Ok);
        assert!(f.summary.contains("Intel VT-x") && f.summary.contains("0x5"), "{}", f.summary);
        let unread = Inputs { feature_control: Msr::NoPermission, ..fake::intel() };
        assert_eq!(virtualization(&unread).status, Status::Ok);
        assert!(virtualization(&unread).summary.contains("vmx flags"));
    }

    #[test]
    fn vmx_locked_off_by_the_firmware() {
        // Linux 5.6 and later hide the flag; the MSR tells why.
        let cpuinfo = fake::INTEL_FLAGS.replace(" vmx", "").replace("vmx flags\t: vnmi preemption_timer invvpid ept_x_only ept\n", "");
        let i = Inputs { cpuinfo, feature_control: Msr::Value(0x1), ..fake::intel() };
        let f = virtualization(&i);
        assert_eq!(f.status, Status::Problem);
        assert!(f.summary.contains("firmware disabled Intel VT-x") && f.summary.contains("0x1"), "{}", f.summary);
        assert!(text(&f).contains("24.7") && text(&f).contains("EOPNOTSUPP"));
        // Older kernels keep the flag: the MSR still decides.
        let old = Inputs { feature_control: Msr::Value(0x3), ..fake::intel() };
        assert_eq!(virtualization(&old).status, Status::Problem);
        // Without the MSR, the kernel's own message.
        let said = Inputs {
            cpuinfo: i.cpuinfo.clone(),
            feature_control: Msr::NoDevice,
            dmesg: Some("[    0.1] x86/cpu: VMX (outside TXT) disabled by BIOS\n".into()),
            ..fake::intel()
        };
        assert!(virtualization(&said).summary.contains("the kernel says \"[    0.1] x86/cpu: VMX (outside TXT)"));
    }

    #[test]
    fn vmx_absent_and_the_msr_not_readable() {
        let cpuinfo = "vendor_id\t: GenuineIntel\nflags\t\t: fpu sse2\n".to_string();
        for (msr, advice) in [(Msr::NoDevice, "sudo modprobe msr"), (Msr::NoPermission, "as root")] {
            let f = virtualization(&Inputs { cpuinfo: cpuinfo.clone(), feature_control: msr, dmesg: None, ..fake::intel() });
            assert_eq!(f.status, Status::Problem);
            assert!(f.summary.contains("no `vmx`"), "{}", f.summary);
            assert!(text(&f).contains(advice), "{}", text(&f));
        }
    }

    #[test]
    fn a_virtual_machine_without_nested_virtualization() {
        let cpuinfo = "vendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 hypervisor\n".to_string();
        let i = Inputs { cpuinfo, dmi_vendor: Some("QEMU".into()), feature_control: Msr::NoDevice, ..fake::intel() };
        let f = virtualization(&i);
        assert_eq!(f.status, Status::Problem);
        assert!(f.summary.contains("virtual machine (QEMU)") && f.summary.contains("nested"), "{}", f.summary);
        assert!(text(&f).contains("options kvm_intel nested=1") && !text(&f).contains("VBoxManage"));
        let unknown_host = Inputs { dmi_vendor: None, ..i };
        assert!(text(&virtualization(&unknown_host)).contains("VBoxManage"));
        let amd = Inputs { cpuinfo: "vendor_id\t: AuthenticAMD\nflags\t\t: hypervisor\n".into(), ..fake::amd() };
        assert!(text(&virtualization(&amd)).contains("options kvm_amd nested=1"));
        // With nested VMX offered, the guest is a fine host.
        let nested = Inputs { cpuinfo: fake::INTEL_FLAGS.replace("sse2", "sse2 hypervisor"), ..fake::intel() };
        assert_eq!(virtualization(&nested).status, Status::Ok);
    }

    #[test]
    fn svm_disabled_by_the_firmware() {
        let f = virtualization(&Inputs { vm_cr: Msr::Value(0x18), ..fake::amd() });
        assert_eq!(f.status, Status::Problem);
        assert!(f.summary.contains("SVMDIS") && f.summary.contains("locked") && f.summary.contains("15.4"), "{}", f.summary);
        let said = Inputs {
            vm_cr: Msr::NoDevice,
            dmesg: Some("kvm_amd: SVM disabled (by BIOS) in MSR_VM_CR on CPU 0\n".into()),
            ..fake::amd()
        };
        assert_eq!(virtualization(&said).status, Status::Problem);
    }

    #[test]
    fn svm_without_the_msr_is_known_only_through_kvm_amd() {
        let i = Inputs { vm_cr: Msr::NoPermission, ..fake::amd() };
        assert_eq!(virtualization(&i).status, Status::Unknown);
        assert!(text(&virtualization(&i)).contains("as root"));
        let kvm = Inputs { modules: vec![module("kvm_amd", 0)], ..i };
        assert_eq!(virtualization(&kvm).status, Status::Ok);
        assert_eq!(virtualization(&fake::amd()).status, Status::Ok);
    }

    #[test]
    fn neither_intel_nor_amd() {
        let i = Inputs { cpuinfo: "vendor_id\t: CentaurHauls\nflags\t\t: vmx\n".into(), ..fake::intel() };
        assert_eq!(virtualization(&i).status, Status::Problem);
    }

    #[test]
    fn kvm_intel_holding_vmx_blocks_the_load() {
        let i = Inputs {
            modules: vec![module("kvm", 1), module("kvm_intel", 0)],
            kvm_enable_virt_at_load: Some("Y\n".into()),
            ..fake::intel()
        };
        let f = other_hypervisors(&i);
        assert_eq!(f.status, Status::Problem);
        let t = text(&f);
        assert!(t.contains("sudo modprobe -r kvm_intel kvm") && t.contains("EOPNOTSUPP") && t.contains("enable_virt_at_load=0"), "{t}");
        // Linux 6.1: idle unless a VM holds it.
        let idle = Inputs { kvm_enable_virt_at_load: None, ..i.clone() };
        assert_eq!(other_hypervisors(&idle).status, Status::Warn);
        let busy = Inputs { modules: vec![module("kvm", 1), module("kvm_intel", 2)], ..idle };
        assert_eq!(other_hypervisors(&busy).status, Status::Problem);
        assert!(text(&other_hypervisors(&busy)).contains("stop the VMs"));
    }

    #[test]
    fn kvm_amd_and_the_others() {
        let i = Inputs { modules: vec![module("kvm_amd", 1), module("vboxdrv", 3)], ..fake::amd() };
        let f = other_hypervisors(&i);
        assert_eq!(f.status, Status::Problem);
        let t = text(&f);
        assert!(t.contains("kvm_amd holds SVM") && t.contains("sudo modprobe -r kvm_amd kvm") && t.contains("vboxdrv"), "{t}");
        let vmware = Inputs { modules: vec![module("vmmon", 0)], ..fake::intel() };
        assert_eq!(other_hypervisors(&vmware).status, Status::Warn);
        let builtin = Inputs {
            modules: vec![crate::doctor::host::Module { name: "kvm_intel".into(), builtin: true, refcnt: None }],
            kvm_enable_virt_at_load: Some("Y".into()),
            ..fake::intel()
        };
        let t = text(&other_hypervisors(&builtin));
        assert!(t.contains("built into") && !t.contains("modprobe -r"), "{t}");
        let rkvm = Inputs { modules: vec![module("rkvm", 0)], ..fake::intel() };
        assert_eq!(other_hypervisors(&rkvm).status, Status::Ok);
        assert!(other_hypervisors(&rkvm).summary.contains("rkvm.ko is loaded"));
    }
}
