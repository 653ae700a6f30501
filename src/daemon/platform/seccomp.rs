//! A seccomp-bpf allowlist for the parser on Linux, Capsicum's counterpart there: after it,
//! the parser can read and write its socket and stderr/syslog, poll, read the clock,
//! manage memory and exit — nothing else. Any other system call fails with EPERM (not a
//! kill: a library path that tries more, such as syslog(3) reconnecting, degrades instead
//! of taking the parser down).
//!
//! Owns the filter program (a pure function, unit-tested by running it in a child process)
//! and its installation. Installed after the privilege drop, which sets no_new_privs.

use anyhow::bail;

/// `AUDIT_ARCH_*` from linux/audit.h: the filter refuses every other architecture's calling
/// convention, so a 32-bit syscall cannot slip past the number checks.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// Offsets into `struct seccomp_data` (linux/seccomp.h).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// The calls the parser makes after the sandbox is up, and why.
fn allowed() -> Vec<libc::c_long> {
    let mut calls = vec![
        libc::SYS_recvfrom,      // messages from the worker
        libc::SYS_recvmsg,       // the same, through other libc paths
        libc::SYS_sendto,        // answers to the worker; log lines on the log link
        libc::SYS_sendmsg,       // the same
        libc::SYS_write,         // stderr under -d -d, and panics
        libc::SYS_writev,        // stderr
        libc::SYS_ppoll,         // waiting for the worker or the next deadline
        libc::SYS_clock_gettime, // Instant::now when the vDSO is not used
        libc::SYS_getpid,        // syslog(3) LOG_PID
        libc::SYS_gettid,        // std thread bookkeeping
        libc::SYS_getrandom,     // HashMap keys
        libc::SYS_brk,           // memory
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_futex, // std locks (stderr, the logger)
        libc::SYS_close,
        libc::SYS_sched_yield,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.push(libc::SYS_poll);
    calls
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: u16::try_from(code).expect("BPF opcodes fit in 16 bits"),
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_if_equal(k: u32, jt: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: u16::try_from(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K).expect("16 bits"),
        jt,
        jf: 0,
        k,
    }
}

/// The filter: wrong architecture → kill; a listed call → allow; anything else → EPERM.
pub fn program(arch: u32, calls: &[libc::c_long]) -> Vec<libc::sock_filter> {
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut program = vec![
        stmt(load, DATA_ARCH),
        jump_if_equal(arch, 1),
        stmt(ret, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(load, DATA_NR),
    ];
    let count = calls.len();
    for (i, &call) in calls.iter().enumerate() {
        // From here, "allow" is (count - i) instructions ahead (past the deny).
        let ahead = u8::try_from(count - i).expect("allowlist shorter than 256");
        let nr = u32::try_from(call).expect("syscall numbers are small");
        program.push(jump_if_equal(nr, ahead));
    }
    program.push(stmt(
        ret,
        libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & 0xffff),
    ));
    program.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
    program
}

fn install(program: &[libc::sock_filter]) -> anyhow::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).expect("short program"),
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: fprog points at `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &raw const fprog,
            0,
            0,
        )
    };
    if rc != 0 {
        bail!("prctl(PR_SET_SECCOMP): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Confines the calling process (the parser) to [`allowed`] calls.
///
/// # Errors
/// When the kernel refuses the filter (no_new_privs must be set first).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn enter() -> anyhow::Result<()> {
    install(&program(AUDIT_ARCH, &allowed()))
}

/// Other architectures: no filter (their syscall tables are not listed here).
///
/// # Errors
/// Never.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn enter() -> anyhow::Result<()> {
    log::warn!("no seccomp filter for this architecture; the parser relies on the privilege drop");
    Ok(())
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    #[test]
    fn program_shape() {
        let program = program(AUDIT_ARCH, &[1, 2, 3]);
        assert_eq!(program.len(), 4 + 3 + 2);
        // Each comparison jumps exactly onto the final "allow".
        for (i, insn) in program[4..7].iter().enumerate() {
            assert_eq!(usize::from(insn.jt) + 4 + i + 1, program.len() - 1);
        }
        assert_eq!(program[8].k, libc::SECCOMP_RET_ALLOW);
        assert_eq!(program[7].k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
    }

    /// In a child: after `enter`, listed calls work and others fail with EPERM.
    #[test]
    fn filter_allows_the_list_and_refuses_the_rest() {
        // SAFETY: the child only makes raw system calls and exits.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let code = unsafe {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || enter().is_err() {
                        10
                    } else if libc::getpid() <= 0 {
                        11
                    } else if libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) != -1
                        || *libc::__errno_location() != libc::EPERM
                    {
                        12
                    } else if libc::open(c"/".as_ptr(), libc::O_RDONLY) != -1 {
                        13
                    } else {
                        0
                    }
                };
                unsafe { libc::_exit(code) };
            }
            ForkResult::Parent { child } => {
                assert_eq!(
                    waitpid(child, None).expect("waitpid"),
                    WaitStatus::Exited(child, 0)
                );
            }
        }
    }
}
