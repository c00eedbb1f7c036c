package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the files the control plane is started with. Everything is generated fresh
// for each run: one CA signs the apiserver's serving certificate and the client
// certificates (admin, controller manager), and a separate key signs service-account
// tokens. A second CA, the front proxy's, signs the certificate the API server presents
// when it proxies a request to an aggregated API (Tenantry's discovery server): the
// aggregated server trusts the X-Remote-User/X-Remote-Group headers only from a client
// with a certificate of that CA (kube-system/extension-apiserver-authentication).
type pki struct {
	CACert, CAKey                   string
	ServingCert, ServingKey         string
	AdminCert, AdminKey             string
	KCMCert, KCMKey                 string
	SAKey, SAPub                    string
	FrontProxyCA                    string
	ProxyClientCert, ProxyClientKey string
}

// frontProxyClient is the common name of the API server's front-proxy client certificate
// (--requestheader-allowed-names): kubeadm's name.
const frontProxyClient = "front-proxy-client"

type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{
		CACert: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"),
		ServingCert: filepath.Join(dir, "apiserver.crt"), ServingKey: filepath.Join(dir, "apiserver.key"),
		AdminCert: filepath.Join(dir, "admin.crt"), AdminKey: filepath.Join(dir, "admin.key"),
		KCMCert: filepath.Join(dir, "kcm.crt"), KCMKey: filepath.Join(dir, "kcm.key"),
		SAKey: filepath.Join(dir, "sa.key"), SAPub: filepath.Join(dir, "sa.pub"),
		FrontProxyCA:    filepath.Join(dir, "front-proxy-ca.crt"),
		ProxyClientCert: filepath.Join(dir, "front-proxy-client.crt"), ProxyClientKey: filepath.Join(dir, "front-proxy-client.key"),
	}
	frontCA, err := issue(nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "tenantry-front-proxy-ca"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	})
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.FrontProxyCA, "CERTIFICATE", frontCA.cert.Raw, 0o644); err != nil {
		return nil, err
	}
	proxyClient, err := issue(frontCA, &x509.Certificate{
		Subject:     pkix.Name{CommonName: frontProxyClient},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	if err := writePair(proxyClient, p.ProxyClientCert, p.ProxyClientKey); err != nil {
		return nil, err
	}
	ca, err := issue(nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "tenantry-controlplane-ca"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	})
	if err != nil {
		return nil, err
	}
	if err := writePair(ca, p.CACert, p.CAKey); err != nil {
		return nil, err
	}
	serving, err := issue(ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.0.0.1")},
	})
	if err != nil {
		return nil, err
	}
	if err := writePair(serving, p.ServingCert, p.ServingKey); err != nil {
		return nil, err
	}
	// The admin is in system:masters, like kind's kubernetes-admin.
	for _, c := range []struct {
		cn, org, cert, key string
	}{
		{"kubernetes-admin", "system:masters", p.AdminCert, p.AdminKey},
		{"system:kube-controller-manager", "system:masters", p.KCMCert, p.KCMKey},
	} {
		kp, err := issue(ca, &x509.Certificate{
			Subject:     pkix.Name{CommonName: c.cn, Organization: []string{c.org}},
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			return nil, err
		}
		if err := writePair(kp, c.cert, c.key); err != nil {
			return nil, err
		}
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.SAKey, "EC PRIVATE KEY", der, 0o600); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.SAPub, "PUBLIC KEY", pub, 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// issue creates a key and a certificate from tmpl, signed by parent (self-signed when
// parent is nil).
func issue(parent *keyPair, tmpl *x509.Certificate) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(7 * 24 * time.Hour)
	signer, signerCert := key, tmpl
	if parent != nil {
		signer, signerCert = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key}, nil
}

func writePair(kp *keyPair, certFile, keyFile string) error {
	if err := writePEM(certFile, "CERTIFICATE", kp.cert.Raw, 0o644); err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(kp.key)
	if err != nil {
		return err
	}
	return writePEM(keyFile, "EC PRIVATE KEY", der, 0o600)
}

func writePEM(file, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}
