# generated from the mailctl commands by `mailctl completion --shell bash`; do not edit
# install: copy to /etc/bash_completion.d/mailctl, or `source` it from ~/.bashrc
_mailctl() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local IFS=$'\n'
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(IFS=' ' compgen -W "completion disable-imap4 disable-pop3 enable-exchangecertificate enable-imap4 enable-pop3 export-mailbox get-adserversettings get-casmailbox get-connectionsettings get-exchangecertificate get-imapsettings get-mailbox get-mailboxstatistics get-moverequest get-moverequeststatistics get-organizationconfig get-owavirtualdirectory get-popsettings get-receiveconnector get-service import-exchangecertificate import-mailbox init install-systemd join-organization new-exchangecertificate new-mailbox new-moverequest prepare-organization prune-mailboxdatabase remove-mailbox remove-moverequest restart-service resume-moverequest run set-adserversettings set-casmailbox set-imapsettings set-mailbox set-owavirtualdirectory set-popsettings set-receiveconnector set-service setup start start-service stop stop-service test-imapconnectivity test-popconnectivity Completion Disable-Imap4 Disable-Pop3 Enable-ExchangeCertificate Enable-Imap4 Enable-Pop3 Export-Mailbox Get-ADServerSettings Get-CASMailbox Get-ConnectionSettings Get-ExchangeCertificate Get-ImapSettings Get-Mailbox Get-MailboxStatistics Get-MoveRequest Get-MoveRequestStatistics Get-OrganizationConfig Get-OwaVirtualDirectory Get-PopSettings Get-ReceiveConnector Get-Service Import-ExchangeCertificate Import-Mailbox Init Install-Systemd Join-Organization New-ExchangeCertificate New-Mailbox New-MoveRequest Prepare-Organization Prune-MailboxDatabase Remove-Mailbox Remove-MoveRequest Restart-Service Resume-MoveRequest Run Set-ADServerSettings Set-CASMailbox Set-ImapSettings Set-Mailbox Set-OwaVirtualDirectory Set-PopSettings Set-ReceiveConnector Set-Service Setup Start Start-Service Stop Stop-Service Test-ImapConnectivity Test-PopConnectivity" -- "$cur"))
        return
    fi
    local cmd="${COMP_WORDS[1],,}" opts="" values=""
    case "$cmd $prev" in
        "completion --shell"|"completion -Shell") values="bash zsh fish" ;;
        "disable-imap4 --startup-type"|"disable-imap4 -StartupType") values="Manual Disabled" ;;
        "disable-pop3 --startup-type"|"disable-pop3 -StartupType") values="Manual Disabled" ;;
        "enable-exchangecertificate --output"|"enable-exchangecertificate -Output") values="table list json" ;;
        "export-mailbox --output"|"export-mailbox -Output") values="table list json" ;;
        "get-adserversettings --output"|"get-adserversettings -Output") values="table list json" ;;
        "get-casmailbox --output"|"get-casmailbox -Output") values="table list json" ;;
        "get-connectionsettings --output"|"get-connectionsettings -Output") values="table list json" ;;
        "get-exchangecertificate --output"|"get-exchangecertificate -Output") values="table list json" ;;
        "get-imapsettings --output"|"get-imapsettings -Output") values="table list json" ;;
        "get-mailbox --output"|"get-mailbox -Output") values="table list json" ;;
        "get-mailboxstatistics --output"|"get-mailboxstatistics -Output") values="table list json" ;;
        "get-moverequest --output"|"get-moverequest -Output") values="table list json" ;;
        "get-moverequeststatistics --output"|"get-moverequeststatistics -Output") values="table list json" ;;
        "get-organizationconfig --output"|"get-organizationconfig -Output") values="table list json" ;;
        "get-owavirtualdirectory --output"|"get-owavirtualdirectory -Output") values="table list json" ;;
        "get-popsettings --output"|"get-popsettings -Output") values="table list json" ;;
        "get-receiveconnector --output"|"get-receiveconnector -Output") values="table list json" ;;
        "get-service --output"|"get-service -Output") values="table list json" ;;
        "import-exchangecertificate --output"|"import-exchangecertificate -Output") values="table list json" ;;
        "import-mailbox --output"|"import-mailbox -Output") values="table list json" ;;
        "new-exchangecertificate --output"|"new-exchangecertificate -Output") values="table list json" ;;
        "new-mailbox --type"|"new-mailbox -Type") values="User Administrator Guest Anonymous" ;;
        "new-moverequest --output"|"new-moverequest -Output") values="table list json" ;;
        "prune-mailboxdatabase --output"|"prune-mailboxdatabase -Output") values="table list json" ;;
        "set-adserversettings --login-verification"|"set-adserversettings -LoginVerification") values="Hash Bind" ;;
        "set-casmailbox --pop-enabled"|"set-casmailbox -PopEnabled") values="true false" ;;
        "set-casmailbox --imap-enabled"|"set-casmailbox -ImapEnabled") values="true false" ;;
        "set-casmailbox --pop-use-protocol-defaults"|"set-casmailbox -PopUseProtocolDefaults") values="true false" ;;
        "set-casmailbox --imap-use-protocol-defaults"|"set-casmailbox -ImapUseProtocolDefaults") values="true false" ;;
        "set-casmailbox --pop-messages-retrieval-mime-format"|"set-casmailbox -PopMessagesRetrievalMimeFormat") values="TextOnly HtmlOnly HtmlAndTextAlternative TextEnrichedOnly TextEnrichedAndTextAlternative BestBodyFormat Tnef" ;;
        "set-casmailbox --imap-messages-retrieval-mime-format"|"set-casmailbox -ImapMessagesRetrievalMimeFormat") values="TextOnly HtmlOnly HtmlAndTextAlternative TextEnrichedOnly TextEnrichedAndTextAlternative BestBodyFormat Tnef" ;;
        "set-casmailbox --pop-enable-exact-rfc822-size"|"set-casmailbox -PopEnableExactRFC822Size") values="true false" ;;
        "set-casmailbox --imap-enable-exact-rfc822-size"|"set-casmailbox -ImapEnableExactRFC822Size") values="true false" ;;
        "set-casmailbox --pop-force-i-cal-for-calendar-retrieval-option"|"set-casmailbox -PopForceICalForCalendarRetrievalOption") values="true false" ;;
        "set-casmailbox --imap-force-i-cal-for-calendar-retrieval-option"|"set-casmailbox -ImapForceICalForCalendarRetrievalOption") values="true false" ;;
        "set-casmailbox --pop-suppress-read-receipt"|"set-casmailbox -PopSuppressReadReceipt") values="true false" ;;
        "set-casmailbox --imap-suppress-read-receipt"|"set-casmailbox -ImapSuppressReadReceipt") values="true false" ;;
        "set-imapsettings --calendar-item-retrieval-option"|"set-imapsettings -CalendarItemRetrievalOption") values="iCalendar IntranetUrl InternetUrl Custom" ;;
        "set-imapsettings --enable-exact-rfc822-size"|"set-imapsettings -EnableExactRFC822Size") values="true false" ;;
        "set-imapsettings --enable-gssapi-and-ntlm-auth"|"set-imapsettings -EnableGSSAPIAndNTLMAuth") values="true false" ;;
        "set-imapsettings --enforce-certificate-errors"|"set-imapsettings -EnforceCertificateErrors") values="true false" ;;
        "set-imapsettings --extended-protection-policy"|"set-imapsettings -ExtendedProtectionPolicy") values="None Allow Require" ;;
        "set-imapsettings --login-type"|"set-imapsettings -LoginType") values="PlainTextLogin PlainTextAuthentication SecureLogin" ;;
        "set-imapsettings --message-retrieval-mime-format"|"set-imapsettings -MessageRetrievalMimeFormat") values="TextOnly HtmlOnly HtmlAndTextAlternative TextEnrichedOnly TextEnrichedAndTextAlternative BestBodyFormat Tnef" ;;
        "set-imapsettings --suppress-read-receipt"|"set-imapsettings -SuppressReadReceipt") values="true false" ;;
        "set-imapsettings --protocol-log-enabled"|"set-imapsettings -ProtocolLogEnabled") values="true false" ;;
        "set-imapsettings --log-file-roll-over-settings"|"set-imapsettings -LogFileRollOverSettings") values="Hourly Daily Weekly Monthly" ;;
        "set-imapsettings --show-hidden-folders-enabled"|"set-imapsettings -ShowHiddenFoldersEnabled") values="true false" ;;
        "set-mailbox --type"|"set-mailbox -Type") values="User Administrator Guest Anonymous" ;;
        "set-mailbox --use-database-quota-defaults"|"set-mailbox -UseDatabaseQuotaDefaults") values="true false" ;;
        "set-popsettings --calendar-item-retrieval-option"|"set-popsettings -CalendarItemRetrievalOption") values="iCalendar IntranetUrl InternetUrl Custom" ;;
        "set-popsettings --enable-exact-rfc822-size"|"set-popsettings -EnableExactRFC822Size") values="true false" ;;
        "set-popsettings --enable-gssapi-and-ntlm-auth"|"set-popsettings -EnableGSSAPIAndNTLMAuth") values="true false" ;;
        "set-popsettings --enforce-certificate-errors"|"set-popsettings -EnforceCertificateErrors") values="true false" ;;
        "set-popsettings --extended-protection-policy"|"set-popsettings -ExtendedProtectionPolicy") values="None Allow Require" ;;
        "set-popsettings --login-type"|"set-popsettings -LoginType") values="PlainTextLogin PlainTextAuthentication SecureLogin" ;;
        "set-popsettings --message-retrieval-mime-format"|"set-popsettings -MessageRetrievalMimeFormat") values="TextOnly HtmlOnly HtmlAndTextAlternative TextEnrichedOnly TextEnrichedAndTextAlternative BestBodyFormat Tnef" ;;
        "set-popsettings --suppress-read-receipt"|"set-popsettings -SuppressReadReceipt") values="true false" ;;
        "set-popsettings --protocol-log-enabled"|"set-popsettings -ProtocolLogEnabled") values="true false" ;;
        "set-popsettings --log-file-roll-over-settings"|"set-popsettings -LogFileRollOverSettings") values="Hourly Daily Weekly Monthly" ;;
        "set-popsettings --message-retrieval-sort-order"|"set-popsettings -MessageRetrievalSortOrder") values="Ascending Descending" ;;
        "set-receiveconnector --enabled"|"set-receiveconnector -Enabled") values="true false" ;;
        "set-receiveconnector --advertise-client-settings"|"set-receiveconnector -AdvertiseClientSettings") values="true false" ;;
        "set-receiveconnector --require-tls"|"set-receiveconnector -RequireTLS") values="true false" ;;
        "set-receiveconnector --protocol-logging-level"|"set-receiveconnector -ProtocolLoggingLevel") values="None Verbose" ;;
        "set-service --startup-type"|"set-service -StartupType") values="Automatic Manual Disabled" ;;
        "test-imapconnectivity --connection-type"|"test-imapconnectivity -ConnectionType") values="Plaintext Ssl Tls" ;;
        "test-imapconnectivity --output"|"test-imapconnectivity -Output") values="table list json" ;;
        "test-popconnectivity --connection-type"|"test-popconnectivity -ConnectionType") values="Plaintext Ssl Tls" ;;
        "test-popconnectivity --output"|"test-popconnectivity -Output") values="table list json" ;;
    esac
    if [[ -n $values ]]; then
        COMPREPLY=($(IFS=' ' compgen -W "$values" -- "$cur"))
        return
    fi
    case "$cmd" in
        completion) opts="--shell --home --help -Shell" ;;
        disable-imap4) opts="--server --startup-type --what-if --home --help -Server -StartupType -WhatIf" ;;
        disable-pop3) opts="--server --startup-type --what-if --home --help -Server -StartupType -WhatIf" ;;
        enable-exchangecertificate) opts="--services --output --what-if --home --help -Services -Output -WhatIf" ;;
        enable-imap4) opts="--server --what-if --home --help -Server -WhatIf" ;;
        enable-pop3) opts="--server --what-if --home --help -Server -WhatIf" ;;
        export-mailbox) opts="--maildir --output --home --help -Maildir -Output" ;;
        get-adserversettings) opts="--output --home --help -Output" ;;
        get-casmailbox) opts="--output --home --help -Output" ;;
        get-connectionsettings) opts="--server --internal --output --home --help -Server -Internal -Output" ;;
        get-exchangecertificate) opts="--output --home --help -Output" ;;
        get-imapsettings) opts="--server --output --home --help -Server -Output" ;;
        get-mailbox) opts="--output --home --help -Output" ;;
        get-mailboxstatistics) opts="--output --home --help -Output" ;;
        get-moverequest) opts="--output --home --help -Output" ;;
        get-moverequeststatistics) opts="--output --home --help -Output" ;;
        get-organizationconfig) opts="--output --home --help -Output" ;;
        get-owavirtualdirectory) opts="--server --output --home --help -Server -Output" ;;
        get-popsettings) opts="--server --output --home --help -Server -Output" ;;
        get-receiveconnector) opts="--server --output --home --help -Server -Output" ;;
        get-service) opts="--server --output --home --help -Server -Output" ;;
        import-exchangecertificate) opts="--file-name --file-data --private-key-file --password --password-stdin --services --output --what-if --home --help -FileName -FileData -PrivateKeyFile -Password -PasswordStdin -Services -Output -WhatIf" ;;
        import-mailbox) opts="--maildir --mbox --folder --mboxo --output --what-if --home --help -Maildir -Mbox -Folder -Mboxo -Output -WhatIf" ;;
        init) opts="--server --domain --fqdn --base-port --demo-password --demo --what-if --home --help -Server -Domain -Fqdn -BasePort -DemoPassword -Demo -WhatIf" ;;
        install-systemd) opts="--output-dir --user --what-if --home --help -OutputDir -User -WhatIf" ;;
        join-organization) opts="--directory-uri --admin-dn --server --backend-address --password-stdin --configuration-dn --fqdn --base-port --tls-ca-file --start --home --help -DirectoryUri -AdminDn -Server -BackendAddress -PasswordStdin -ConfigurationDn -Fqdn -BasePort -TlsCaFile -Start" ;;
        new-exchangecertificate) opts="--subject-name --domain-name --services --friendly-name --validity-days --output --what-if --home --help -SubjectName -DomainName -Services -FriendlyName -ValidityDays -Output -WhatIf" ;;
        new-mailbox) opts="--password --password-stdin --primary-smtp-address --display-name --user-principal-name --type --server --what-if --home --help -Password -PasswordStdin -PrimarySmtpAddress -DisplayName -UserPrincipalName -Type -Server -WhatIf" ;;
        new-moverequest) opts="--target-database --suspend-when-ready-to-complete --output --home --help -TargetDatabase -SuspendWhenReadyToComplete -Output" ;;
        prepare-organization) opts="--admin-dn --password-stdin --configuration-dn --backend-address --organization-name --home --help -AdminDn -PasswordStdin -ConfigurationDn -BackendAddress -OrganizationName" ;;
        prune-mailboxdatabase) opts="--older-than-days --server --output --what-if --home --help -OlderThanDays -Server -Output -WhatIf" ;;
        remove-mailbox) opts="--what-if --home --help -WhatIf" ;;
        remove-moverequest) opts="--home --help" ;;
        restart-service) opts="--server --what-if --home --help -Server -WhatIf" ;;
        resume-moverequest) opts="--home --help" ;;
        run) opts="--detach --base-port --demo-password --home --help -Detach -BasePort -DemoPassword" ;;
        set-adserversettings) opts="--uri --preferred-server --base-dn --bind-dn --bind-password-stdin --tls-ca-file --login-verification --connect-timeout --operation-timeout --mapping --disable --what-if --home --help -Uri -PreferredServer -BaseDn -BindDn -BindPasswordStdin -TlsCaFile -LoginVerification -ConnectTimeout -OperationTimeout -Mapping -Disable -WhatIf" ;;
        set-casmailbox) opts="--what-if --pop-enabled --imap-enabled --pop-use-protocol-defaults --imap-use-protocol-defaults --pop-messages-retrieval-mime-format --imap-messages-retrieval-mime-format --pop-enable-exact-rfc822-size --imap-enable-exact-rfc822-size --pop-force-i-cal-for-calendar-retrieval-option --imap-force-i-cal-for-calendar-retrieval-option --pop-suppress-read-receipt --imap-suppress-read-receipt --home --help -WhatIf -PopEnabled -ImapEnabled -PopUseProtocolDefaults -ImapUseProtocolDefaults -PopMessagesRetrievalMimeFormat -ImapMessagesRetrievalMimeFormat -PopEnableExactRFC822Size -ImapEnableExactRFC822Size -PopForceICalForCalendarRetrievalOption -ImapForceICalForCalendarRetrievalOption -PopSuppressReadReceipt -ImapSuppressReadReceipt" ;;
        set-imapsettings) opts="--server --what-if --authenticated-connection-timeout --pre-authenticated-connection-timeout --banner --calendar-item-retrieval-option --owa-server-url --enable-exact-rfc822-size --enable-gssapi-and-ntlm-auth --enforce-certificate-errors --extended-protection-policy --external-connection-settings --internal-connection-settings --ssl-bindings --unencrypted-or-tls-bindings --x509-certificate-name --login-type --max-connections --max-connection-from-single-ip --max-connections-per-user --message-retrieval-mime-format --suppress-read-receipt --protocol-log-enabled --log-file-location --log-file-roll-over-settings --log-per-file-size-quota --proxy-target-port --domain-controller --worker-processes --back-end-worker-processes --max-command-size --show-hidden-folders-enabled --home --help -Server -WhatIf -AuthenticatedConnectionTimeout -PreAuthenticatedConnectionTimeout -Banner -CalendarItemRetrievalOption -OwaServerUrl -EnableExactRFC822Size -EnableGSSAPIAndNTLMAuth -EnforceCertificateErrors -ExtendedProtectionPolicy -ExternalConnectionSettings -InternalConnectionSettings -SSLBindings -UnencryptedOrTLSBindings -X509CertificateName -LoginType -MaxConnections -MaxConnectionFromSingleIP -MaxConnectionsPerUser -MessageRetrievalMimeFormat -SuppressReadReceipt -ProtocolLogEnabled -LogFileLocation -LogFileRollOverSettings -LogPerFileSizeQuota -ProxyTargetPort -DomainController -WorkerProcesses -BackEndWorkerProcesses -MaxCommandSize -ShowHiddenFoldersEnabled" ;;
        set-mailbox) opts="--password --password-stdin --what-if --display-name --primary-smtp-address --email-addresses --server --type --use-database-quota-defaults --issue-warning-quota --prohibit-send-quota --prohibit-send-receive-quota --home --help -Password -PasswordStdin -WhatIf -DisplayName -PrimarySmtpAddress -EmailAddresses -Server -Type -UseDatabaseQuotaDefaults -IssueWarningQuota -ProhibitSendQuota -ProhibitSendReceiveQuota" ;;
        set-owavirtualdirectory) opts="--server --what-if --internal-url --external-url --bindings --ssl-bindings --internal-networks --home --help -Server -WhatIf -InternalUrl -ExternalUrl -Bindings -SSLBindings -InternalNetworks" ;;
        set-popsettings) opts="--server --what-if --authenticated-connection-timeout --pre-authenticated-connection-timeout --banner --calendar-item-retrieval-option --owa-server-url --enable-exact-rfc822-size --enable-gssapi-and-ntlm-auth --enforce-certificate-errors --extended-protection-policy --external-connection-settings --internal-connection-settings --ssl-bindings --unencrypted-or-tls-bindings --x509-certificate-name --login-type --max-connections --max-connection-from-single-ip --max-connections-per-user --message-retrieval-mime-format --suppress-read-receipt --protocol-log-enabled --log-file-location --log-file-roll-over-settings --log-per-file-size-quota --proxy-target-port --domain-controller --worker-processes --back-end-worker-processes --max-command-size --message-retrieval-sort-order --home --help -Server -WhatIf -AuthenticatedConnectionTimeout -PreAuthenticatedConnectionTimeout -Banner -CalendarItemRetrievalOption -OwaServerUrl -EnableExactRFC822Size -EnableGSSAPIAndNTLMAuth -EnforceCertificateErrors -ExtendedProtectionPolicy -ExternalConnectionSettings -InternalConnectionSettings -SSLBindings -UnencryptedOrTLSBindings -X509CertificateName -LoginType -MaxConnections -MaxConnectionFromSingleIP -MaxConnectionsPerUser -MessageRetrievalMimeFormat -SuppressReadReceipt -ProtocolLogEnabled -LogFileLocation -LogFileRollOverSettings -LogPerFileSizeQuota -ProxyTargetPort -DomainController -WorkerProcesses -BackEndWorkerProcesses -MaxCommandSize -MessageRetrievalSortOrder" ;;
        set-receiveconnector) opts="--what-if --enabled --advertise-client-settings --fqdn --bindings --auth-mechanism --permission-groups --banner --require-tls --tls-certificate-name --remote-ip-ranges --max-message-size --max-recipients-per-message --max-inbound-connection --max-inbound-connection-per-source --max-inbound-connection-percentage-per-source --max-logon-failures --connection-timeout --connection-inactivity-timeout --protocol-logging-level --comment --home --help -WhatIf -Enabled -AdvertiseClientSettings -Fqdn -Bindings -AuthMechanism -PermissionGroups -Banner -RequireTLS -TlsCertificateName -RemoteIPRanges -MaxMessageSize -MaxRecipientsPerMessage -MaxInboundConnection -MaxInboundConnectionPerSource -MaxInboundConnectionPercentagePerSource -MaxLogonFailures -ConnectionTimeout -ConnectionInactivityTimeout -ProtocolLoggingLevel -Comment" ;;
        set-service) opts="--startup-type --server --what-if --home --help -StartupType -Server -WhatIf" ;;
        setup) opts="--home --help" ;;
        start) opts="--home --help" ;;
        start-service) opts="--server --what-if --home --help -Server -WhatIf" ;;
        stop) opts="--home --help" ;;
        stop-service) opts="--server --timeout --what-if --home --help -Server -Timeout -WhatIf" ;;
        test-imapconnectivity) opts="--client-access-server --connection-type --port-client-access-server --light-mode --trust-any-ssl-certificate --mailbox-credential --timeout --per-connection-timeout --mailbox-server --reset-test-account-credentials --output --home --help -ClientAccessServer -ConnectionType -PortClientAccessServer -LightMode -TrustAnySSLCertificate -MailboxCredential -Timeout -PerConnectionTimeout -MailboxServer -ResetTestAccountCredentials -Output" ;;
        test-popconnectivity) opts="--client-access-server --connection-type --port-client-access-server --light-mode --trust-any-ssl-certificate --mailbox-credential --timeout --per-connection-timeout --mailbox-server --reset-test-account-credentials --output --home --help -ClientAccessServer -ConnectionType -PortClientAccessServer -LightMode -TrustAnySSLCertificate -MailboxCredential -Timeout -PerConnectionTimeout -MailboxServer -ResetTestAccountCredentials -Output" ;;
    esac
    COMPREPLY=($(IFS=' ' compgen -W "$opts" -- "$cur"))
}
complete -o default -F _mailctl mailctl
