# Verify every DKIM-Signature of each message with Perl's Mail::DKIM (Debian
# libmail-dkim-perl), taking public keys from a file instead of DNS.
#
# usage: perl verify_maildkim.pl KEYS MESSAGE...
#
# KEYS has one line per key: "selector._domainkey.domain<TAB>TXT value".
# For each signature of each message, prints one line:
#
#     path<TAB>index<TAB>s=<TAB>d=<TAB>result<TAB>detail
#
# where result is Mail::DKIM's: pass, fail, invalid, temperror, none...
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Mail::DKIM::PublicKey;

my $keysfile = shift @ARGV;
my %keys;
open( my $kf, '<', $keysfile ) or die "$keysfile: $!\n";
while ( my $line = <$kf> ) {
    chomp $line;
    my ( $name, $value ) = split /\t/, $line, 2;
    $keys{ lc $name } = $value;
}
close $kf;

# Replace the DNS lookup: answer from %keys, then parse and check the record
# as Mail::DKIM does with a DNS answer (Mail::DKIM::PublicKey::fetch_async).
{
    no warnings 'redefine';
    *Mail::DKIM::PublicKey::fetch_async = sub {
        my ( $class, %prms ) = @_;
        my %callbacks  = %{ $prms{Callbacks} || {} };
        my $on_success = $callbacks{Success} || sub { $_[0] };
        my $name       = lc "$prms{Selector}._domainkey.$prms{Domain}";
        my $result     = eval {
            my $txt = $keys{$name};
            return $on_success->() unless defined $txt;
            my $self = $class->parse($txt);
            $self->{Selector} = $prms{Selector};
            $self->{Domain}   = $prms{Domain};
            $self->check;
            return $on_success->($self);
        };
        if ( my $err = $@ ) {
            die $err unless $callbacks{Error};
            $result = $callbacks{Error}->($err);
        }
        return sub { $result };
    };
}

foreach my $path (@ARGV) {
    my $dkim = Mail::DKIM::Verifier->new();
    open( my $fh, '<:raw', $path ) or die "$path: $!\n";
    my $buf;
    while ( read( $fh, $buf, 65536 ) ) {
        $dkim->PRINT($buf);
    }
    close $fh;
    $dkim->CLOSE;
    my @sigs = $dkim->signatures;
    print join( "\t", $path, '-', '-', '-', 'none', 'no DKIM-Signature' ), "\n"
      unless @sigs;
    my $idx = 0;
    foreach my $sig (@sigs) {
        my $detail = $sig->result_detail // '';
        $detail =~ s/[\t\n]/ /g;
        print join( "\t",
            $path, $idx++, $sig->selector // '', $sig->domain // '',
            $sig->result // '', $detail ),
          "\n";
    }
}
