"""Pegasus's SSH connections use the cipher that is cheapest for the CPU.

Decrypting is most of Pegasus's CPU for a job with much output; libssh2's
first choice, chacha20-poly1305, takes twice the time of AES-GCM on a CPU with
AES instructions (issue 16).
"""
import pytest
from ssh2.session import LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC

from pegasus import ssh, sshclient, sshconfig

LIBSSH2_CIPHERS = ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com",
                   "aes128-gcm@openssh.com", "aes256-ctr", "aes192-ctr", "aes128-ctr",
                   "aes256-cbc", "3des-cbc"]


def test_aes_gcm_first_on_a_cpu_with_aes_instructions():
    prefs = sshclient.cipher_prefs(("fpu", "sse2", "aes", "avx"), LIBSSH2_CIPHERS)
    assert prefs.split(",") == ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                                "chacha20-poly1305@openssh.com", "aes128-ctr",
                                "aes192-ctr", "aes256-ctr"]


def test_libssh2_s_own_order_without_them():
    assert sshclient.cipher_prefs(("fpu", "sse2"), LIBSSH2_CIPHERS) == ""
    assert sshclient.cipher_prefs((), LIBSSH2_CIPHERS) == ""


def test_only_ciphers_libssh2_has_are_offered():
    prefs = sshclient.cipher_prefs(("aes",), ["chacha20-poly1305@openssh.com", "aes128-ctr"])
    assert prefs == "chacha20-poly1305@openssh.com,aes128-ctr"


@pytest.mark.sshd
def test_a_connection_to_a_stock_sshd_uses_the_cheapest_cipher(cluster):
    executor = ssh.connect(sshconfig.resolve(cluster.aliases[0], cluster.ssh_config))
    try:
        session = executor.client.session
        used = {session.methods(LIBSSH2_METHOD_CRYPT_CS),
                session.methods(LIBSSH2_METHOD_CRYPT_SC)}
    finally:
        executor.close()
    if "aes" in sshclient._cpu_flags():
        assert used == {"aes128-gcm@openssh.com"}
    else:
        assert used == {"chacha20-poly1305@openssh.com"}
