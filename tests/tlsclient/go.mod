module autopgo.test/tlsclient

go 1.23
